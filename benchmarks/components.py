"""Where the time goes: a per-component wall-clock breakdown and FLOP shares by operation type.

:class:`ComponentTimer` hooks modules (forward pre/post hooks, exclusive times: a convolution inside an
attention block counts once, for the innermost component) and ``torch.autograd.grad``:

* ``unet.attention`` - diffusers ``Attention`` modules of the UNet (q/k/v/out projections + softmax(QKᵀ)V);
* ``unet.feedforward`` - the transformer blocks' GEGLU feed-forward layers;
* ``unet.conv`` - the UNet's ``Conv2d`` layers (resnets, down/upsamplers, conv_in/out);
* ``unet.other`` - the rest of a UNet call (GroupNorm, SiLU, LayerNorm, embeddings, glue);
* ``vae`` - VAE encoder/decoder (and quant convs);
* ``lpips`` - the perceptual loss's forward, ``features`` and ``distance``;
* ``text`` - the text encoders;
* ``backward`` - everything inside ``torch.autograd.grad`` (UNet + VAE + LPIPS backward, not split);
* ``python/other`` - the wall time minus all of the above: window crops, averaging, scheduler steps,
  copies, Python overhead.

On the CPU every call is synchronous, so the hooks measure the work itself. ``clock`` is
``time.perf_counter`` (wall) by default; on a shared machine pass :func:`cpu_clock` (this process's CPU
time: with one torch thread it is the work done, whatever else the machine runs). On a GPU pass
``cuda_sync=True`` (each hook synchronises; slower, but attributes kernels to the right component).

:func:`flop_shares` counts one forward call with ``FlopCounterMode`` and groups the operations:
convolutions, linear layers (matrix products with weights) and attention (``scaled_dot_product_attention``
or the batched products of a classic processor).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch
from torch import nn

CATEGORIES = ("unet.attention", "unet.feedforward", "unet.conv", "unet.other", "vae", "lpips", "text",
              "backward", "python/other")


class ComponentTimer:
    """``with ComponentTimer(unet=..., vae=..., lpips=..., text=[...]) as timer: run()``; then
    ``timer.seconds`` (category → s), ``timer.wall`` and ``timer.table()``.

    Several UNets/VAEs (e.g. a reference and pano360 sharing nothing) may be passed as lists.
    """

    def __init__(self, unet=None, vae=None, lpips=None, text=None, cuda_sync: bool = False, clock=None):
        self.roots = {"unet": _as_list(unet), "vae": _as_list(vae), "lpips": _as_list(lpips), "text": _as_list(text)}
        self.cuda_sync = cuda_sync
        self.clock = clock or time.perf_counter
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.wall = 0.0
        self._stack: list[list] = []
        self._handles = []
        self._restore = []

    # --- hook plumbing --------------------------------------------------------------------------
    def _now(self) -> float:
        if self.cuda_sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.clock()

    def _enter(self, category: str) -> None:
        self._stack.append([category, self._now(), 0.0])

    def _exit(self) -> None:
        category, start, children = self._stack.pop()
        elapsed = self._now() - start
        self.seconds[category] += elapsed - children
        self.calls[category] += 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def _hook(self, module: nn.Module, category: str) -> None:
        self._handles.append(module.register_forward_pre_hook(lambda *_: self._enter(category)))
        self._handles.append(module.register_forward_hook(lambda *_: self._exit()))

    def _wrap_method(self, obj, name: str, category: str) -> None:
        original = getattr(obj, name, None)
        if not callable(original):
            return

        def timed(*args, **kwargs):
            self._enter(category)
            try:
                return original(*args, **kwargs)
            finally:
                self._exit()

        had_instance_attr = name in vars(obj)
        setattr(obj, name, timed)
        self._restore.append((obj, name, original if had_instance_attr else None))

    def __enter__(self):
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        for unet in self.roots["unet"]:
            self._hook(unet, "unet.other")
            for module in unet.modules():
                if isinstance(module, Attention):
                    self._hook(module, "unet.attention")
                elif isinstance(module, FeedForward):
                    self._hook(module, "unet.feedforward")
                elif isinstance(module, nn.Conv2d):
                    self._hook(module, "unet.conv")
        for vae in self.roots["vae"]:
            for name in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
                part = getattr(vae, name, None)
                if isinstance(part, nn.Module):
                    self._hook(part, "vae")
        for lpips in self.roots["lpips"]:
            self._hook(lpips, "lpips")
            for name in ("features", "distance"):
                self._wrap_method(lpips, name, "lpips")
        for text in self.roots["text"]:
            self._hook(text, "text")
        self._wrap_method(torch.autograd, "grad", "backward")
        self._start = self.clock()
        return self

    def __exit__(self, *exc):
        self.wall = self._now() - self._start
        for handle in self._handles:
            handle.remove()
        for obj, name, original in reversed(self._restore):
            if original is None:
                delattr(obj, name)
            else:
                setattr(obj, name, original)
        self.seconds["python/other"] = self.wall - sum(v for k, v in self.seconds.items() if k != "python/other")
        return False

    def row(self) -> dict[str, float]:
        """Seconds per category (all of :data:`CATEGORIES`) and the wall time."""
        return {**{c: round(self.seconds.get(c, 0.0), 3) for c in CATEGORIES}, "wall": round(self.wall, 3)}


def cpu_clock() -> float:
    """Seconds of CPU time used by this process (all its threads)."""
    return time.process_time()


def clock_named(name: str):
    """``"wall"`` → ``time.perf_counter``, ``"cpu"`` → :func:`cpu_clock`."""
    return {"wall": time.perf_counter, "cpu": cpu_clock}[name]


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def components_of(pipe) -> dict:
    """The ComponentTimer keyword arguments for a diffusers pipeline."""
    text = [m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if m is not None]
    return dict(unet=pipe.unet, vae=pipe.vae, text=text)


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """Rows name → ComponentTimer.row() as a Markdown table (seconds, share of the wall time)."""
    header = "| run | " + " | ".join(CATEGORIES) + " | wall (s) |"
    lines = [header, "|---" * (len(CATEGORIES) + 2) + "|"]
    for name, row in rows.items():
        cells = [f"{row[c]:.2f} ({100 * row[c] / row['wall']:.0f}%)" for c in CATEGORIES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['wall']:.2f} |")
    return "\n".join(lines)


# --- FLOP shares ---------------------------------------------------------------------------------------
_ATTENTION_OPS = ("_scaled_dot_product", "bmm", "baddbmm")
_CONV_OPS = ("convolution",)
_LINEAR_OPS = ("mm", "addmm")


def flop_shares(call) -> dict[str, float]:
    """Run ``call()`` under ``FlopCounterMode`` (no grad; meta tensors are fine) and return GFLOP by
    group: conv, linear, attention (softmax(QKᵀ)V), other, total."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call()
    groups = defaultdict(float)
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        if any(name.startswith(p) for p in _ATTENTION_OPS):
            group = "attention"
        elif name in _CONV_OPS:
            group = "conv"
        elif name in _LINEAR_OPS:
            group = "linear"
        else:
            group = "other"
        groups[group] += flops / 1e9
    groups["total"] = sum(groups.values())
    return dict(groups)


@contextlib.contextmanager
def threads(count: int | None):
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
