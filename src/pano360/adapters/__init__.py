"""Trainable panorama adapters behind one contract (:class:`~pano360.adapters.base.PanoramaAdapter`).

Kinds: ``lora`` (LoRA on a subset of the attention projections), ``unipano`` (LoRA on W_v and a
mixture of LoRA experts on W_o), ``mvdiffusion`` (correspondence-aware attention blocks between the
UNet's blocks). Each lives in its own module and registers in :data:`ADAPTER_KINDS`.
"""

from __future__ import annotations
