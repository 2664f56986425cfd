"""Text conditioning shared by sampling and training.

Every caller (the generator, every method, the trainer, validation) encodes prompts through
:func:`encode_prompts`, which hands the pipeline to its family's encoder
(:mod:`pano360.backbones.family`), so sampling and training condition the model identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextConditioning:
    """Encoded prompts for ``N`` conditioning units (a unit is one panorama, or one view of one).

    ``embeds``: [N, L, D] token embeddings (L = 77 for CLIP, 512 T5 tokens for FLUX, 77 + 256 for SD3);
    ``negative_embeds`` the same for the negative prompts, or None when there is no classifier-free
    guidance. SDXL, FLUX and SD3 also have ``pooled`` / ``negative_pooled`` [N, P]; Qwen-Image has
    ``mask`` / ``negative_mask`` [N, L] (1 = a real token; positive and negative padded to one L).
    ``truncated[n]`` is True when prompt n was longer than the text encoder's context and lost its tail.
    """

    embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    truncated: tuple[bool, ...] = ()
    mask: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    def select(self, index: torch.Tensor) -> TextConditioning:
        """The conditioning of units ``index`` [M] (rows may repeat)."""
        index = index.to(self.embeds.device)
        pick = lambda tensor: None if tensor is None else tensor[index]
        return TextConditioning(pick(self.embeds), pick(self.negative_embeds), pick(self.pooled),
                                pick(self.negative_pooled), mask=pick(self.mask), negative_mask=pick(self.negative_mask))


def _truncated(pipe, prompts: list[str]) -> tuple[bool, ...]:
    """Which prompts the family's main tokenizer cuts at its context length."""
    from .family import family_of

    tokenizer, limit = family_of(pipe).truncation_limit(pipe)
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    return tuple(length > limit for length in lengths)


def encode_prompts(pipe, prompts: list[str], negative_prompts: list[str] | None = None, guidance: bool = True,
                   device: torch.device | str | None = None) -> TextConditioning:
    """Encode ``N`` prompts (and negative prompts when ``guidance``) with the pipeline's text encoder(s).

    ``negative_prompts`` None means the empty prompt, as in diffusers. No gradients are kept: the
    text encoders are frozen in every use pano360 makes of them.
    """
    from .family import family_of

    family = family_of(pipe)
    if device is None:
        device = family.denoiser(pipe).device
    text = family.encode(pipe, prompts, negative_prompts, guidance, device)
    text.truncated = _truncated(pipe, prompts)
    return text
