"""A reference-style MVDiffusion multi-view UNet, written from the digest (``reference/mvdiffusion.md``).

It follows the reference's structure, not pano360's: the UNet is unrolled by hand, the full-resolution
correspondences of every ordered view pair are recomputed on every call, and each CAA block loops over
views, neighbours and the 9 taps with one ``grid_sample`` each. It reuses the CAA blocks' *parameters*
(``transformer.*``, ``pe.freq_bands``) but none of pano360's CAA arithmetic. Tests compare pano360's
fast network with it; ``benchmarks/bench_mvdiffusion.py`` times it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """[height, width, 3] float32 homogeneous pixel coordinates (x, y, 1), index = pixel centre."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).float()


def all_correspondences(R: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, m, m, H, W, 2]: where each pixel of view i lands in view j (every ordered pair)."""
    b, m = R.shape[:2]
    out = torch.zeros(b, m, m, height, width, 2)
    points = pixel_grid(height, width).reshape(-1, 3).T[None].repeat(b, 1, 1)
    for i in range(m):
        for j in range(m):
            homography = K[:, j] @ torch.inverse(R[:, j]) @ R[:, i] @ torch.inverse(K[:, i])
            mapped = homography @ points
            out[:, i, j] = (mapped[:, :2] / mapped[:, 2:]).permute(0, 2, 1).reshape(b, height, width, 2)
    return out


def positional_encoding(delta: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    """[..., 2] → [..., 4N]: sin of x·f, sin of y·f, cos of x·f, cos of y·f."""
    angles = delta[..., :, None] * bands.reshape(-1)  # [..., 2, N]
    return torch.cat([torch.sin(angles).flatten(-2), torch.cos(angles).flatten(-2)], dim=-1)


def caa_reference(block, x, corr, R, K, image_h, image_w, m):
    """One CAA block the slow way: x [(b·m), c, h, w]."""
    bm, c, h, w = x.shape
    b = bm // m
    x = x.view(b, m, c, h, w)
    scale = image_h // h
    centres = pixel_grid(image_h, image_w)[scale // 2::scale, scale // 2::scale, :2]  # [h, w, 2]
    bands = block.pe.freq_bands
    t = block.transformer
    outs = []
    for i in range(m):
        keys, masks, deltas = [], [], []
        for j in ((i - 1) % m, (i + 1) % m):
            back_h = K[:, i] @ torch.inverse(R[:, i]) @ R[:, j] @ torch.inverse(K[:, j])  # [b, 3, 3]
            u = corr[:, i, j, scale // 2::scale, scale // 2::scale] / scale - 0.5
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    tap = u + torch.tensor([float(dx), float(dy)])
                    pixel = (tap + 0.5) * scale
                    norm = torch.stack([tap[..., 0] / (w - 1) * 2 - 1, tap[..., 1] / (h - 1) * 2 - 1], dim=-1)
                    keys.append(F.grid_sample(x[:, j], norm, mode="bilinear", padding_mode="zeros",
                                              align_corners=True))  # [b, c, h, w]
                    masks.append((pixel[..., 0] > 0) & (pixel[..., 0] < image_w) & (pixel[..., 1] > 0)
                                 & (pixel[..., 1] < image_h))
                    homog = torch.cat([pixel, torch.ones_like(pixel[..., :1])], dim=-1).reshape(b, -1, 3)
                    back = (back_h @ homog.transpose(1, 2)).transpose(1, 2).reshape(b, h, w, 3)
                    deltas.append((back[..., :2] / back[..., 2:] - centres) / scale)
        keys = torch.stack(keys, 1).permute(0, 3, 4, 1, 2).reshape(b * h * w, 18, c)
        mask = torch.stack(masks, 1).permute(0, 2, 3, 1).reshape(b * h * w, 18, 1).float()
        pe = positional_encoding(torch.stack(deltas, 1).permute(0, 2, 3, 1, 4).reshape(b * h * w, 18, 2), bands)
        keys = (keys + pe) * mask
        query = x[:, i].permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
        query_pe = positional_encoding(torch.zeros(1, 2), bands)
        out = transformer_reference(t, query, keys, query_pe)
        outs.append(out.reshape(b, h, w, c).permute(0, 3, 1, 2))
    return torch.stack(outs, 1).reshape(bm, c, h, w)


def transformer_reference(t, x, context, query_pe):
    """x + Attn(LN1(x + pe0), LN1(context)), then + FF(LN2(·)); manual multi-head softmax attention."""
    a = t.attn1
    heads = a.heads
    q_in = F.layer_norm(x + query_pe, (x.shape[-1],), t.norm1.weight, t.norm1.bias)
    kv_in = F.layer_norm(context, (x.shape[-1],), t.norm1.weight, t.norm1.bias)
    q, k, v = q_in @ a.to_q.weight.T, kv_in @ a.to_k.weight.T, kv_in @ a.to_v.weight.T
    n = x.shape[0]
    q, k, v = (z.reshape(n, z.shape[1], heads, -1).permute(0, 2, 1, 3) for z in (q, k, v))
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5, dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", weights, v).permute(0, 2, 1, 3).reshape(n, 1, -1)
    x = out @ a.to_out.weight.T + a.to_out.bias + x
    proj = t.ff.net[0].proj
    value, gate = (t.norm2(x) @ proj.weight.T + proj.bias).chunk(2, dim=-1)
    ff = t.ff.net[2]
    return (value * F.gelu(gate)) @ ff.weight.T + ff.bias + x


def multiview_reference(unet, adapter, latents, timestep, prompt_embeds, R, K):
    """The hand-unrolled multi-view UNet: latents [b, m, C, h, w], prompt_embeds [b, m, L, D] → [b, m, 4, h, w]."""
    b, m, _, h, w = latents.shape
    image_h, image_w = h * 8, w * 8
    corr = all_correspondences(R, K, image_h, image_w)

    def caa(block, hidden):
        return caa_reference(block, hidden, corr, R, K, image_h, image_w, m)

    x = latents.reshape(b * m, *latents.shape[2:])
    context = prompt_embeds.reshape(b * m, *prompt_embeds.shape[2:])
    t = torch.as_tensor(timestep).reshape(-1).expand(b * m)
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    x = unet.conv_in(x)
    skips = [x]
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
        for resnet, attn in zip(block.resnets, attentions):
            x = resnet(x, emb)
            if attn is not None:
                x = attn(x, encoder_hidden_states=context, return_dict=False)[0]
            skips.append(x)
        x = caa(adapter.cp_blocks_encoder[i], x)
        if block.downsamplers is not None:
            x = block.downsamplers[0](x)
            skips.append(x)
    x = unet.mid_block.resnets[0](x, emb)
    x = caa(adapter.cp_blocks_mid, x)
    for attn, resnet in zip(unet.mid_block.attentions, unet.mid_block.resnets[1:]):
        x = resnet(attn(x, encoder_hidden_states=context, return_dict=False)[0], emb)
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
        for resnet, attn in zip(block.resnets, attentions):
            x = resnet(torch.cat([x, skips.pop()], dim=1), emb)
            if attn is not None:
                x = attn(x, encoder_hidden_states=context, return_dict=False)[0]
        x = caa(adapter.cp_blocks_decoder[i], x)
        if block.upsamplers is not None:
            x = block.upsamplers[0](x)
    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(b, m, *x.shape[1:])
