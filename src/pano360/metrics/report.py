"""A self-contained HTML report of an evaluation: metric table, per-image plots, thumbnails, seam views.

One file, no external resources: thumbnails are inline JPEG data URIs, plots are inline SVG. A short
script sorts the gallery by a per-image metric and marks the page as rendered
(``<body data-report-ready="1">``), which the screenshot test checks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math

import numpy as np
import torch

from .suite import METRICS, EvalResult

__all__ = ["MAX_GALLERY", "render_report", "thumbnail_data_uri"]

MAX_GALLERY = 60
_PROTOCOL_ORDER = ["PanFusion", "SyncDiffusion", "geometry"]
_PROTOCOL_TITLE = {
    "PanFusion": "PanFusion / UniPano protocol (EvalPanoGen)",
    "SyncDiffusion": "SyncDiffusion protocol",
    "geometry": "Geometry-aware metrics",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d232a;background:#fafafa}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:14px}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:10px 14px;margin:12px 0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px;background:#fff}
th,td{border:1px solid #ddd;padding:5px 9px;text-align:left;vertical-align:top}th{background:#f0f2f4}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot{background:#fff;border:1px solid #ddd;padding:8px}
.plot h3{margin:0 0 4px;font-size:14px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;padding:8px;font-size:13px}
.card img{width:100%;display:block}.seam{position:relative}.seam:after{content:'';position:absolute;left:50%;
top:0;bottom:0;border-left:1px dashed rgba(255,0,0,.8)}.name{font-weight:600;word-break:break-all}
.vals{color:#444}.label{color:#777;font-size:12px;margin:4px 0 2px}
"""

_SCRIPT = """
(function(){
  var select=document.getElementById('sort-by');
  var gallery=document.getElementById('gallery');
  function sortCards(){
    if(!select||!gallery)return;
    var key=select.value, cards=Array.prototype.slice.call(gallery.children);
    cards.sort(function(a,b){
      if(key==='name')return a.dataset.name<b.dataset.name?-1:1;
      var x=parseFloat(a.dataset[key]), y=parseFloat(b.dataset[key]);
      if(isNaN(x))return 1; if(isNaN(y))return -1; return select.selectedOptions[0].dataset.desc==='1'?y-x:x-y;
    });
    cards.forEach(function(c){gallery.appendChild(c);});
  }
  if(select)select.addEventListener('change',sortCards);
  document.body.setAttribute('data-report-ready','1');
})();
"""


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits - 1, 1)}f}".rstrip("0").rstrip(".")


def thumbnail_data_uri(image: torch.Tensor, max_width: int = 640, quality: int = 85) -> str:
    """uint8 [3, H, W] → ``data:image/jpeg;base64,...`` at most ``max_width`` wide."""
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if pil.width > max_width:
        pil = pil.resize((max_width, max(1, round(pil.height * max_width / pil.width))), Image.BOX)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _svg_distribution(values: list[float | None], names: list[str], width: int = 360, height: int = 170) -> str:
    """Histogram with the individual values as a strip of dots (hover: image name and value)."""
    pairs = [(float(v), n) for v, n in zip(values, names) if v is not None and math.isfinite(float(v))]
    if not pairs:
        return "<p>no values</p>"
    data = np.array([v for v, _ in pairs])
    low, high = float(data.min()), float(data.max())
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    left, right, top, bottom = 30, 30, 18, 40
    plot_w, plot_h = width - left - right, height - top - bottom - 24
    bins = int(min(30, max(5, math.ceil(math.sqrt(len(data))))))
    counts, edges = np.histogram(data, bins=bins, range=(low, high))
    peak = max(int(counts.max()), 1)

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for count, start, stop in zip(counts, edges[:-1], edges[1:]):
        bar_h = plot_h * count / peak
        parts.append(
            f'<rect x="{x_of(start):.1f}" y="{top + plot_h - bar_h:.1f}" width="{max(x_of(stop) - x_of(start) - 1, 1):.1f}" '
            f'height="{bar_h:.1f}" fill="#6c8ebf"><title>{int(count)} in [{_fmt(start)}, {_fmt(stop)})</title></rect>'
        )
    mean = float(data.mean())
    parts.append(f'<line x1="{x_of(mean):.1f}" x2="{x_of(mean):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#c0392b" '
                 f'stroke-dasharray="4 3"><title>mean {_fmt(mean)}</title></line>')
    strip_y = top + plot_h + 14
    rng = np.random.default_rng(0)
    for (value, name), jitter in zip(pairs, rng.uniform(-5, 5, len(pairs))):
        parts.append(f'<circle cx="{x_of(value):.1f}" cy="{strip_y + jitter:.1f}" r="3" fill="#2c3e50" fill-opacity="0.6">'
                     f'<title>{html.escape(name)}: {_fmt(value)}</title></circle>')
    axis_y = height - bottom + 22
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y - 12}" y2="{axis_y - 12}" stroke="#999"/>')
    for tick in np.linspace(low, high, 4):
        parts.append(f'<text x="{x_of(float(tick)):.1f}" y="{axis_y + 2}" font-size="10" text-anchor="middle">{_fmt(float(tick), 4)}</text>')
    parts.append(f'<text x="{left}" y="11" font-size="10" fill="#555">n={len(pairs)}, mean {_fmt(mean)}, '
                 f'highest bar {peak}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(result: EvalResult, generated_images: torch.Tensor, max_gallery: int = MAX_GALLERY) -> str:
    """The HTML page for ``result``; ``generated_images`` (uint8 [N, 3, H, W]) feed the gallery."""
    from .views import roll_half

    info = result.info
    esc = html.escape
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>pano360 eval: {esc(str(info.get('generated', {}).get('folder', '')))}</title>",
           f"<style>{_CSS}</style></head><body data-report-ready='0'>",
           "<h1>Panorama evaluation</h1>"]
    generated = info.get("generated") or {}
    reference = info.get("reference")
    out.append("<p class='meta'>")
    out.append(f"Generated: <b>{esc(str(generated.get('folder')))}</b> ({generated.get('count')} images, "
               f"{esc(str(generated.get('size')))})")
    if reference:
        out.append(f"<br>Reference: <b>{esc(str(reference.get('folder')))}</b> ({reference.get('count')} images, "
                   f"{esc(str(reference.get('size')))})")
    out.append(f"<br>Prompts: {esc(str(info.get('prompts')))} · device {esc(str(info.get('device')))} · "
               f"pano360 {esc(str(info.get('pano360_version')))} · {esc(str(info.get('created')))}</p>")
    if info.get("random_weights"):
        out.append("<div class='warn'><b>Random network weights.</b> This report comes from a smoke test "
                   "(--random-weights): the numbers below say nothing about image quality.</div>")

    # ---- metric tables, one per protocol
    out.append("<h2>Metrics</h2>")
    for protocol in _PROTOCOL_ORDER:
        rows = [(k, v) for k, v in result.metrics.items() if v.get("protocol") == protocol]
        if not rows:
            continue
        out.append(f"<h3>{esc(_PROTOCOL_TITLE[protocol])}</h3><table><tr><th>metric</th><th>value</th><th>± std</th>"
                   "<th>n</th><th></th><th>what</th></tr>")
        for key, entry in rows:
            arrow = "↓ lower is better" if entry.get("lower_is_better") else "↑ higher is better"
            extra = ""
            if key == "omnifid" and isinstance(entry.get("groups"), dict):
                g = entry["groups"]
                extra = f" (sides {_fmt(g.get('sides'))}, up {_fmt(g.get('up'))}, down {_fmt(g.get('down'))})"
            out.append(
                f"<tr><td>{esc(entry.get('label', key))}<br><code>{esc(key)}</code></td>"
                f"<td class='num'><b>{_fmt(entry.get('value'))}</b></td><td class='num'>{_fmt(entry.get('std'))}</td>"
                f"<td class='num'>{entry.get('n', '')}</td><td>{arrow}</td>"
                f"<td>{esc(entry.get('description', ''))}{esc(extra)}</td></tr>"
            )
        out.append("</table>")
    if result.skipped:
        out.append("<h3>Not computed</h3><table><tr><th>metric</th><th>why</th></tr>")
        for key, reason in result.skipped.items():
            label = METRICS[key].label if key in METRICS else key
            out.append(f"<tr><td>{esc(label)} <code>{esc(key)}</code></td><td>{esc(reason)}</td></tr>")
        out.append("</table>")

    # ---- per-image distributions
    per_image = {k: v for k, v in result.per_image.items() if any(x is not None for x in v)}
    if per_image:
        out.append("<h2>Per-image distributions</h2><div class='plots'>")
        for key, values in per_image.items():
            label = METRICS[key].label if key in METRICS else key
            out.append(f"<div class='plot'><h3>{esc(label)} <code>{esc(key)}</code></h3>"
                       f"{_svg_distribution(values, result.names)}</div>")
        out.append("</div>")

    # ---- gallery with seam views
    count = min(len(result.names), max_gallery, generated_images.shape[0])
    out.append("<h2>Panoramas and seam views</h2>")
    out.append("<p class='meta'>Each panorama, then the same panorama rolled by half its width: the left/right "
               "seam sits on the dashed line.")
    if count < len(result.names):
        out.append(f" Showing the first {count} of {len(result.names)} panoramas.")
    out.append("</p>")
    if per_image:
        out.append("<label>Sort by <select id='sort-by'><option value='name'>file name</option>")
        for key in per_image:
            desc = "0" if METRICS.get(key) is None or METRICS[key].lower_is_better else "1"
            label = METRICS[key].label if key in METRICS else key
            out.append(f"<option value='{esc(key)}' data-desc='{desc}'>{esc(label)} (best first)</option>")
        out.append("</select></label>")
    out.append("<div class='gallery' id='gallery'>")
    for i in range(count):
        name = result.names[i]
        data = " ".join(
            f"data-{esc(k)}='{'' if v[i] is None else repr(float(v[i]))}'" for k, v in per_image.items()
        )
        values = ", ".join(
            f"{esc(METRICS[k].label if k in METRICS else k)} {_fmt(v[i])}" for k, v in per_image.items()
        )
        image = generated_images[i]
        out.append(
            f"<div class='card' data-name='{esc(name)}' {data}><div class='name'>{esc(name)}</div>"
            f"<div class='vals'>{values}</div><div class='label'>panorama</div>"
            f"<img alt='{esc(name)}' src='{thumbnail_data_uri(image)}'>"
            f"<div class='label'>seam view (rolled by W/2)</div><div class='seam'>"
            f"<img alt='{esc(name)} rolled' src='{thumbnail_data_uri(roll_half(image))}'></div></div>"
        )
    out.append("</div>")
    settings = json.dumps(info.get("config", {}), indent=1, default=str)
    out.append(f"<h2>Settings</h2><pre>{esc(settings)}</pre>")
    weights = info.get("weights") or {}
    if weights:
        out.append("<p class='meta'>Weights: " + ", ".join(f"{esc(k)}: {esc(str(v))}" for k, v in weights.items()) + "</p>")
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out)
