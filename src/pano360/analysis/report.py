"""The ``pano360 qkvo`` report: one self-contained HTML page (tables, SVG bar charts, image grids).

No external resources: images are inline JPEG data URIs, charts inline SVG. A last script line marks
the page as rendered (``<body data-report-ready="1">``), which the browser test checks.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..metrics.report import _CSS, _fmt, thumbnail_data_uri

_EXTRA_CSS = """
.grid{border-collapse:collapse}.grid td{padding:3px;border:none;vertical-align:top}
.grid img{display:block;max-width:300px}.grid th{background:none;border:none;text-align:left;font-size:13px}
.bar{fill:#4a78b5}.bar.best{fill:#2e9d5b}svg text{font-size:11px;fill:#333}
"""

_LABELS = {"perspective_lpips": ("perspective LPIPS to base", True)}
MAX_GRID_IMAGES = 4


def _metric_label(name: str) -> tuple[str, bool]:
    """(label, lower is better) of a metric name."""
    from ..metrics.suite import METRICS

    if name in METRICS:
        return METRICS[name].label, METRICS[name].lower_is_better
    return _LABELS.get(name, (name, True))


def _metric_names(record: dict) -> list[str]:
    names: list[str] = []
    for experiment in ("isolation", "switching"):
        for scores in record.get(experiment, {}).values():
            names += [n for n in scores["metrics"] if n not in names]
    return names


def _table(rows: dict, names: list[str], label: str) -> str:
    head = "".join(f"<th>{html.escape(_metric_label(n)[0])} {'↓' if _metric_label(n)[1] else '↑'}</th>"
                   for n in names)
    body = []
    for variant, scores in rows.items():
        cells = "".join(f"<td class='num'>{_fmt(scores['metrics'].get(n))}</td>" for n in names)
        body.append(f"<tr><td>{html.escape(label)} {html.escape(variant)}</td>{cells}</tr>")
    return f"<table><tr><th>variant</th>{head}</tr>{''.join(body)}</table>"


def _bar_chart(title: str, values: dict[str, float | None], lower_is_better: bool,
               width: int = 340, height: int = 180) -> str:
    finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    if not finite:
        return ""
    top = max(max(finite.values()), 0.0) or 1.0
    bottom = min(min(finite.values()), 0.0)
    span = (top - bottom) or 1.0
    best = (min if lower_is_better else max)(finite, key=finite.get)
    slot = (width - 20) / max(1, len(values))
    bars = []
    for index, (name, value) in enumerate(values.items()):
        x = 10 + index * slot + slot * 0.15
        label = f"<text x='{x + slot * 0.35:.1f}' y='{height - 4}' text-anchor='middle'>{html.escape(name)}</text>"
        if name in finite:
            v = finite[name]
            y0 = 20 + (top - max(v, 0.0)) / span * (height - 50)
            h = abs(v) / span * (height - 50)
            cls = "bar best" if name == best else "bar"
            bars.append(f"<rect class='{cls}' x='{x:.1f}' y='{y0:.1f}' width='{slot * 0.7:.1f}' height='{max(h, 0.5):.1f}'>"
                        f"<title>{html.escape(name)}: {_fmt(v)}</title></rect>"
                        f"<text x='{x + slot * 0.35:.1f}' y='{y0 - 3:.1f}' text-anchor='middle'>{_fmt(v, 3)}</text>")
        bars.append(label)
    arrow = "lower is better" if lower_is_better else "higher is better"
    return (f"<div class='plot'><h3>{html.escape(title)} <small>({arrow})</small></h3>"
            f"<svg width='{width}' height='{height}' role='img'>{''.join(bars)}</svg></div>")


def _thumbnail(path: Path, max_width: int) -> str:
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as image:
        array = np.array(image.convert("RGB"))
    return thumbnail_data_uri(torch.from_numpy(array).permute(2, 0, 1).contiguous(), max_width=max_width)


def _grid(title: str, rows: list[tuple[str, Path]], prompts: list[str], max_width: int) -> str:
    count = min(MAX_GRID_IMAGES, len(prompts))
    header = "".join(f"<th>{html.escape(p[:60])}</th>" for p in prompts[:count])
    body = []
    for label, folder in rows:
        cells = []
        for index in range(count):
            path = folder / f"{index:03d}.png"
            cells.append(f"<td><img alt='{html.escape(label)} {index}' src='{_thumbnail(path, max_width)}'></td>"
                         if path.is_file() else "<td>–</td>")
        body.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return f"<h3>{html.escape(title)}</h3><table class='grid'><tr><th></th>{header}</tr>{''.join(body)}</table>"


def render_qkvo_report(record: dict, output: Path) -> str:
    """The HTML page for a :func:`~pano360.analysis.qkvo.run_qkvo` record; images are read from ``output``."""
    names = _metric_names(record)
    config = record["config"]
    parts = [(f"<h1>q/k vs v/o analysis</h1><p class='meta'>model {html.escape(str(config['model']))}, "
             + (f"LoRAs from {html.escape(str(config['loras']))}, " if config.get("loras") else
                f"rank {config['rank']}, {config['steps']} training steps per LoRA, ")
             + f"seed {config['seed']}, "
             f"{record['data']['trained_on']} training / {record['data']['held_out']} held-out panoramas, "
             f"{config['num_inference_steps']} sampling steps.</p>")]
    if config.get("random_metric_weights"):
        parts.append("<p class='warn'>Metrics computed with random networks (smoke test): the numbers mean "
                     "nothing.</p>")
    prompts = record["held_out_prompts"]
    for experiment, title, label in (("isolation", "Isolation: one LoRA per subset", "LoRA on"),
                                     ("switching", "Switching: the all-four LoRA with subsets kept on", "kept on")):
        rows = record.get(experiment, {})
        if not rows:
            continue
        parts.append(f"<h2>{title}</h2>{_table(rows, names, label)}<div class='plots'>")
        for name in names:
            metric_label, lower = _metric_label(name)
            parts.append(_bar_chart(metric_label, {v: s["metrics"].get(name) for v, s in rows.items()}, lower))
        parts.append("</div>")
        parts.append(_grid("Panoramas (held-out captions)",
                           [(f"{label} {v}", output / s["folder"] / "panoramas") for v, s in rows.items()]
                           + [("held-out images", output / "heldout")], prompts, 300))
        parts.append(_grid("Perspective images (native size, no wraparound)",
                           [("base model", output / "variants" / "base" / "perspective")]
                           + [(f"{label} {v}", output / s["folder"] / "perspective") for v, s in rows.items()],
                           prompts, 150))
    training = record.get("training", {})
    if training:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td class='num'>{v['steps']}</td>"
                       f"<td class='num'>{_fmt(v['final_loss'])}</td></tr>" for k, v in training.items())
        parts.append(f"<h2>Training</h2><table><tr><th>LoRA on</th><th>steps</th><th>final loss</th></tr>{rows}</table>")
    body = "".join(parts)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>pano360 qkvo</title>"
            f"<style>{_CSS}{_EXTRA_CSS}</style></head><body>{body}"
            "<script>document.body.setAttribute('data-report-ready','1');</script></body></html>")
