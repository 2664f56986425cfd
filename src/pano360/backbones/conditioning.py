"""Text conditioning shared by sampling and training: prompt encoding and SDXL's added time ids.

Every caller (the generator, every method, the trainer, validation) encodes prompts through
:func:`encode_prompts`, so sampling and training condition the UNet identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextConditioning:
    """Encoded prompts for ``N`` conditioning units (a unit is one panorama, or one view of one).

    ``embeds``: [N, L, D] token embeddings (L = 77 for CLIP); ``negative_embeds`` the same for the
    negative prompts, or None when there is no classifier-free guidance. SDXL also has ``pooled`` /
    ``negative_pooled`` [N, P]. ``truncated[n]`` is True when prompt n was longer than the text
    encoder's context and lost its tail (CLIP keeps 77 tokens).
    """

    embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    truncated: tuple[bool, ...] = ()

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    def select(self, index: torch.Tensor) -> TextConditioning:
        """The conditioning of units ``index`` [M] (rows may repeat)."""
        index = index.to(self.embeds.device)
        pick = lambda tensor: None if tensor is None else tensor[index]
        return TextConditioning(pick(self.embeds), pick(self.negative_embeds), pick(self.pooled),
                                pick(self.negative_pooled))


def _truncated(pipe, prompts: list[str]) -> tuple[bool, ...]:
    """Which prompts the (first) tokenizer cuts at its context length."""
    tokenizer = pipe.tokenizer
    limit = tokenizer.model_max_length
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    return tuple(length > limit for length in lengths)


def encode_prompts(pipe, prompts: list[str], negative_prompts: list[str] | None = None, guidance: bool = True,
                   device: torch.device | str | None = None) -> TextConditioning:
    """Encode ``N`` prompts (and negative prompts when ``guidance``) with the pipeline's text encoder(s).

    ``negative_prompts`` None means the empty prompt, as in diffusers. No gradients are kept: the
    text encoders are frozen in every use pano360 makes of them.
    """
    device = device if device is not None else pipe.unet.device
    with torch.no_grad():
        if getattr(pipe, "text_encoder_2", None) is not None:
            embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance,
                negative_prompt=negative_prompts,
            )
            text = TextConditioning(embeds, negative if guidance else None, pooled,
                                    negative_pooled if guidance else None)
        else:
            embeds, negative = pipe.encode_prompt(prompts, device, 1, guidance, negative_prompt=negative_prompts)
            text = TextConditioning(embeds, negative if guidance else None)
    text.truncated = _truncated(pipe, prompts)
    return text


def sdxl_time_ids(size_px: tuple[int, int], count: int, dtype: torch.dtype, device) -> torch.Tensor:
    """SDXL's added time ids [count, 6]: original size, crop offset (0, 0), target size, in pixels
    (height, width): the size of what the UNet sees (a window, a view or the whole panorama)."""
    height, width = size_px
    ids = torch.tensor([height, width, 0, 0, height, width], dtype=dtype, device=device)
    return ids.expand(count, 6)
