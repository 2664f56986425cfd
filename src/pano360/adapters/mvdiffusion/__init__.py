"""MVDiffusion (Tang et al., NeurIPS 2023): correspondence-aware attention between a frozen UNet's blocks.

* :mod:`.cameras`: K and R of the view ring, in float32 as the reference builds them;
* :mod:`.correspondence`: per-level sampling grids, validity and displacements, cached per rig;
* :mod:`.caa`: the CAA block (reference parameter names, one batched ``grid_sample`` per block);
* :mod:`.network`: :class:`MultiViewUNet`, the UNet with the blocks hooked in at the reference's places;
* :mod:`.checkpoint` / :mod:`.adapter`: the released ``pano.ckpt`` / ``pano_outpaint.ckpt`` and
  :class:`MVDiffusionAdapter` (adapter kind ``mvdiffusion``).
"""

from .adapter import MVDiffusionAdapter, unet_widths
from .cameras import Cameras, cameras_from_rig, get_k_r, ring_cameras
from .network import MultiViewUNet

__all__ = ["Cameras", "MVDiffusionAdapter", "MultiViewUNet", "cameras_from_rig", "get_k_r", "ring_cameras",
           "unet_widths"]
