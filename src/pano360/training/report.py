"""What a run leaves for people: the model card (README.md) and a self-contained report.html.

The report has the loss curve (raw and smoothed), the learning-rate curve (inline SVG) and a grid of
the validation panoramas per step (embedded as JPEG data URIs), so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ..io.atomic import atomic_write_text

VALIDATION = "validation"


def _polyline(points: list[tuple[float, float]], box: tuple[float, float, float, float], width: int, height: int,
              log_y: bool = False) -> str:
    import math

    x0, x1, y0, y1 = box
    coords = []
    for x, y in points:
        if log_y:
            y = math.log10(max(y, 1e-12))
        px = 40 + (x - x0) / max(x1 - x0, 1e-12) * (width - 50)
        py = height - 25 - (y - y0) / max(y1 - y0, 1e-12) * (height - 40)
        coords.append(f"{px:.1f},{py:.1f}")
    return " ".join(coords)


def svg_curve(series: dict[str, list[tuple[float, float]]], title: str, width: int = 640, height: int = 240,
              log_y: bool = False) -> str:
    """An SVG line chart of named series of (x, y) points (first axis: step)."""
    import math

    points = [p for values in series.values() for p in values]
    if not points:
        return f"<p>{html.escape(title)}: no data yet</p>"
    ys = [math.log10(max(y, 1e-12)) if log_y else y for _, y in points]
    xs = [x for x, _ in points]
    box = (min(xs), max(xs), min(ys), max(ys))
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    lines = [f'<polyline fill="none" stroke="{colours[i % 4]}" stroke-width="1.5" '
             f'points="{_polyline(values, box, width, height, log_y)}"/>'
             for i, values in enumerate(series.values())]
    legend = " ".join(f'<tspan fill="{colours[i % 4]}">{html.escape(name)}</tspan>' for i, name in enumerate(series))
    low, high = (10 ** box[2], 10 ** box[3]) if log_y else (box[2], box[3])
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'<text x="40" y="12" font-size="12">{html.escape(title)}: {legend}</text>'
            f'<line x1="40" y1="{height - 25}" x2="{width - 10}" y2="{height - 25}" stroke="#999"/>'
            f'<line x1="40" y1="15" x2="40" y2="{height - 25}" stroke="#999"/>'
            f'<text x="2" y="20" font-size="10">{high:.3g}</text>'
            f'<text x="2" y="{height - 27}" font-size="10">{low:.3g}</text>'
            f'<text x="40" y="{height - 8}" font-size="10">step {box[0]:g}</text>'
            f'<text x="{width - 80}" y="{height - 8}" font-size="10">step {box[1]:g}</text>'
            + "".join(lines) + "</svg>")


def _thumbnail_uri(path: Path, width: int = 512) -> str:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_report(output: str | Path) -> Path:
    """(Re)write ``output/report.html`` from ``log.jsonl`` and ``validation/step-*/``."""
    from .trainer import CONFIG_NAME, read_log

    output = Path(output)
    log = read_log(output)
    loss = [(r["step"], r["loss"]) for r in log]
    smooth = [(r["step"], r["loss_smoothed"]) for r in log if "loss_smoothed" in r]
    lr = [(r["step"], r["lr"]) for r in log]
    config_path = output / CONFIG_NAME
    summary = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    rows = []
    for folder in sorted((output / VALIDATION).glob("step-*")):
        cells = "".join(f'<figure><img src="{_thumbnail_uri(p)}" alt="{html.escape(p.name)}">'
                        f"<figcaption>{html.escape(_prompt_of(p))}</figcaption></figure>"
                        for p in sorted(folder.glob("*.png")))
        rows.append(f"<h3>{html.escape(folder.name)}</h3><div class=grid>{cells}</div>")
    last = log[-1] if log else {}
    body = (
        "<!doctype html><html><head><meta charset=utf-8><title>pano360 training report</title><style>"
        "body{font-family:sans-serif;margin:1.5em;max-width:1200px}.grid{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:0}figure img{width:512px;max-width:100%}figcaption{font-size:12px;color:#555}"
        "pre{background:#f4f4f4;padding:8px;overflow:auto}</style></head><body>"
        "<h1>pano360 training report</h1>"
        f"<p>steps logged: {len(log)}; last step {last.get('step', '-')}, loss {last.get('loss', float('nan')):.5g}, "
        f"lr {last.get('lr', float('nan')):.3g}</p>"
        + svg_curve({"loss": loss, "smoothed": smooth}, "training loss", log_y=True)
        + svg_curve({"lr": lr}, "learning rate")
        + "<h2>Validation panoramas</h2>" + ("".join(rows) or "<p>none (use --validate-every and "
                                                          "--validation-prompt)</p>")
        + "<h2>Configuration</h2><pre>" + html.escape(json.dumps(summary, indent=2, default=str)) + "</pre>"
        + "</body></html>"
    )
    return atomic_write_text(output / "report.html", body, overwrite=True)


def _prompt_of(path: Path) -> str:
    text = path.with_suffix(".txt")
    return text.read_text(encoding="utf-8").strip() if text.is_file() else path.stem


def write_model_card(output: str | Path, config, data: dict, metadata: dict) -> Path:
    """``output/README.md``: base model, data summary and licence, steps and hyper-parameters, usage."""
    output = Path(output)
    hyper = metadata.get("hyper_parameters", {})
    lines = [
        "---",
        "library_name: diffusers",
        f"base_model: {config.model}",
        "tags: [pano360, panorama, equirectangular, 360, lora]",
        "---",
        f"# {config.adapter} adapter for 360° panoramas",
        "",
        (f"Trained with `pano360 train` on `{config.model}` ({metadata.get('family')}, "
         f"{metadata.get('prediction_type')}) at {config.resolution}x{2 * config.resolution} (equirectangular)."),
        "",
        "## Data",
        f"- source: {data.get('source')} `{data.get('root')}`",
        (f"- panoramas: {data.get('panoramas')} ({data.get('skipped', 0)} skipped), "
         f"distinct captions: {data.get('unique_captions')}"),
        f"- licence of the data: {data.get('license') or 'unknown'}",
        "",
        "## Training",
        f"- optimizer steps: {metadata.get('steps')}, panoramas seen: {metadata.get('samples_seen')}",
    ]
    lines += [f"- {key}: {json.dumps(value)}" for key, value in hyper.items()]
    lines += [
        "",
        "## Use",
        "```",
        f"pano360 generate \"your prompt\" --model {config.model} --lora {output}",
        "```",
        "or in diffusers: `pipe.load_lora_weights(\"<this folder>\")` (file `pytorch_lora_weights.safetensors`).",
        "",
    ]
    return atomic_write_text(output / "README.md", "\n".join(lines), overwrite=True)
