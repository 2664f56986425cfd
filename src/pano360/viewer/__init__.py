"""An offline, self-contained 360° viewer page for a panorama (Pannellum, vendored).

:func:`write_viewer_html` writes **one HTML file** that holds everything: Pannellum's script and
stylesheet (``assets/``, MIT, version in ``assets/README.md``) and the panorama itself as base64 data,
turned into a ``blob:`` URL in the page. The file opens from disk (``file://``), over HTTP, or as an
e-mail attachment, with no network access: no CDN, no second file. Pannellum needs WebGL.

:func:`open_viewer` serves the same page from memory on 127.0.0.1 and opens the default browser.

Cylindrical strips (wider than 2:1) are shown as a band: the page sets Pannellum's ``haov``/``vaov``/
``vOffset`` from the image's GPano cropped-area fields (or, without them, from its size, like the
tags ``pano360`` writes) and keeps the view inside the band.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import threading
import webbrowser
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import InvalidInputError
from ..io.atomic import atomic_write_text

ASSETS = Path(__file__).resolve().parent / "assets"
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class PanoramaExtent:
    """Angles the image covers, in degrees: Pannellum's haov, vaov and vOffset."""

    haov: float = 360.0
    vaov: float = 180.0
    v_offset: float = 0.0

    @property
    def is_full_sphere(self) -> bool:
        return self.haov >= 360.0 and self.vaov >= 180.0


def panorama_extent(width: int, height: int, gpano: dict | None = None) -> PanoramaExtent:
    """Coverage of a ``width``×``height`` image from its GPano fields, or from its size without them.

    Raises :class:`InvalidInputError` for images that cannot be panoramas (taller than 2:1 without
    metadata saying otherwise).
    """
    gpano = gpano or {}
    keys = ("FullPanoWidthPixels", "FullPanoHeightPixels", "CroppedAreaImageWidthPixels",
            "CroppedAreaImageHeightPixels", "CroppedAreaTopPixels")
    if all(isinstance(gpano.get(key), int) and gpano[key] >= 0 for key in keys) and \
            gpano["FullPanoWidthPixels"] > 0 and gpano["FullPanoHeightPixels"] > 0:
        full_w, full_h = gpano["FullPanoWidthPixels"], gpano["FullPanoHeightPixels"]
        crop_w, crop_h, top = (gpano["CroppedAreaImageWidthPixels"], gpano["CroppedAreaImageHeightPixels"],
                               gpano["CroppedAreaTopPixels"])
        if 0 < crop_w <= full_w and 0 < crop_h <= full_h and top + crop_h <= full_h:
            return PanoramaExtent(
                haov=360.0 * crop_w / full_w,
                vaov=180.0 * crop_h / full_h,
                v_offset=-180.0 * ((top + crop_h / 2) / full_h - 0.5),
            )
    if 2 * height > width:
        raise InvalidInputError(
            f"a {height}x{width} (HxW) image is taller than 2:1 (width:height) and has no GPano metadata; it is not an "
            "equirectangular panorama"
        )
    return PanoramaExtent(vaov=360.0 * height / width)  # a band centred on the horizon, square pixels


DEFAULT_VIEW = {"yaw": 0.0, "pitch": 0.0, "hfov": 100.0}
"""Initial view when neither the caller nor the file's GPano metadata gives one (degrees)."""


def initial_view(gpano: dict | None) -> dict[str, float]:
    """The initial view a file's GPano metadata asks for, as Pannellum ``yaw``/``pitch``/``hfov`` (degrees).

    GPano headings are compass headings: ``InitialViewHeadingDegrees`` is relative to north like
    ``PoseHeadingDegrees`` (the image centre), so Pannellum's yaw (0 = image centre) is their
    difference, wrapped to [-180, 180). Fields that are absent (or out of range) are left out.
    """
    gpano = gpano or {}
    view: dict[str, float] = {}
    heading = gpano.get("InitialViewHeadingDegrees")
    if isinstance(heading, (int, float)) and math.isfinite(heading):
        pose = gpano.get("PoseHeadingDegrees")
        pose = pose if isinstance(pose, (int, float)) and math.isfinite(pose) else 0.0
        view["yaw"] = (float(heading) - float(pose) + 180.0) % 360.0 - 180.0
    pitch = gpano.get("InitialViewPitchDegrees")
    if isinstance(pitch, (int, float)) and -90.0 <= pitch <= 90.0:
        view["pitch"] = float(pitch)
    hfov = gpano.get("InitialHorizontalFOVDegrees")
    if isinstance(hfov, (int, float)) and 0.0 < hfov < 180.0:
        view["hfov"] = float(hfov)
    return view


def viewer_config(
    image_path: str | os.PathLike, *, yaw: float | None = None, pitch: float | None = None,
    hfov: float | None = None,
) -> dict:
    """Pannellum configuration for an image (without the ``panorama`` URL).

    ``yaw``/``pitch``/``hfov`` (degrees) left as None come from the file's GPano initial view
    (:func:`initial_view`), else :data:`DEFAULT_VIEW`. The image is fully decoded once, so a
    truncated or corrupt file is refused here (:func:`pano360.io.images.read_image`).
    """
    from ..io.images import read_image, read_panorama_metadata

    path = Path(image_path)
    image = read_image(path, "image", formats=tuple(MIME_TYPES))
    width, height, image_format = image.width, image.height, image.format
    del image
    if hfov is not None and not 0 < hfov < 180:
        raise InvalidInputError(f"--hfov must be between 0 and 180 degrees (exclusive), got {hfov:g}")
    if pitch is not None and not -90.0 <= pitch <= 90.0:
        raise InvalidInputError(f"--pitch must be between -90 and 90 degrees, got {pitch:g}")
    try:
        gpano = read_panorama_metadata(path)
    except (ValueError, SyntaxError, OSError, InvalidInputError):  # unreadable XMP: view without it
        gpano = {}
    view = DEFAULT_VIEW | initial_view(gpano)
    for key, value in (("yaw", yaw), ("pitch", pitch), ("hfov", hfov)):
        if value is not None:
            view[key] = float(value)
    yaw, pitch, hfov = view["yaw"], view["pitch"], view["hfov"]
    extent = panorama_extent(width, height, gpano)
    config = {
        "type": "equirectangular",
        "autoLoad": True,
        "ignoreGPanoXMP": True,  # the extent below already comes from the GPano fields
        "haov": extent.haov,
        "vaov": extent.vaov,
        "vOffset": extent.v_offset,
        "yaw": float(yaw),
        "pitch": float(pitch),
        "hfov": float(hfov),
        "minHfov": 20,
        "maxHfov": max(120.0, float(hfov)),
        "showZoomCtrl": True,
        "showFullscreenCtrl": True,
        "keyboardZoom": True,
        "mouseZoom": True,
        "draggable": True,
        "friction": 0.15,
        "crossOrigin": "anonymous",
    }
    if not extent.is_full_sphere:
        # Keep the view inside the band (Pannellum needs the pitch limits for this).
        config["avoidShowingBackground"] = True
        config["minPitch"] = extent.v_offset - extent.vaov / 2
        config["maxPitch"] = extent.v_offset + extent.vaov / 2
        if extent.haov < 360.0:
            config["minYaw"], config["maxYaw"] = -extent.haov / 2, extent.haov / 2
    config["_mime"] = MIME_TYPES[image_format]
    config["_size"] = (width, height)
    return config


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    return code.replace("</", "<\\/")  # a literal "</script" would end the element early


def build_viewer_html(
    image_path: str | os.PathLike, *, title: str | None = None, yaw: float | None = None,
    pitch: float | None = None, hfov: float | None = None, paint: bool = False,
) -> str:
    """The complete, self-contained viewer page for ``image_path`` as a string.

    ``paint`` adds the paint mode (``assets/paint.js``): Look / Paint / Erase, a brush in view space
    stored as an equirect mask of the image's size that follows the sphere (seam and poles
    included); the page's ``window.pano360Mask()`` returns it as a PNG data URL (white = painted).
    """
    path = Path(image_path)
    config = viewer_config(path, yaw=yaw, pitch=pitch, hfov=hfov)
    mime = config.pop("_mime")
    size = config.pop("_size")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    title = title or path.name
    boot = (
        "(function () {\n"
        "  var b64 = document.getElementById('pano-data').textContent.replace(/\\s+/g, '');\n"
        "  var raw = atob(b64), bytes = new Uint8Array(raw.length);\n"
        "  for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);\n"
        f"  var url = URL.createObjectURL(new Blob([bytes], {{type: {json.dumps(mime)}}}));\n"
        f"  var config = {json.dumps(config)};\n"
        "  config.panorama = url;\n"
        "  if (config.avoidShowingBackground) {  // start zoomed in enough for the band to fill the height\n"
        "    var box = document.getElementById('panorama'), rad = Math.PI / 180;\n"
        "    var aspect = box.clientWidth / Math.max(1, box.clientHeight);\n"
        "    var fit = 2 * Math.atan(Math.tan((config.maxPitch - config.minPitch) / 2 * rad) * aspect) / rad;\n"
        "    config.hfov = Math.min(config.hfov, fit);\n"
        "  }\n"
        "  var viewer = pannellum.viewer('panorama', config);\n"
        "  window.pano360Viewer = viewer;\n"
        "  viewer.on('load', function () { document.body.setAttribute('data-pano-loaded', '1'); });\n"
        "  viewer.on('error', function (msg) { document.body.setAttribute('data-pano-error', String(msg)); });\n"
        "})();\n"
    )
    if paint:
        spec = {"width": size[0], "height": size[1], "haov": config["haov"], "vaov": config["vaov"],
                "vOffset": config["vOffset"]}
        boot += f"window.pano360PaintSpec = {json.dumps(spec)};\n" + _asset("paint.js")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta name=\"generator\" content=\"pano360 (viewer: Pannellum, MIT licence)\">\n"
        f"<style>\n{_asset('pannellum.css')}\n"
        "html, body { margin: 0; height: 100%; background: #000; overflow: hidden; }\n"
        "#panorama { width: 100%; height: 100%; }\n</style>\n</head>\n<body>\n"
        "<div id=\"panorama\"></div>\n"
        f"<script id=\"pano-data\" type=\"application/octet-stream\">{data}</script>\n"
        f"<script>\n{_inline_script(_asset('pannellum.js'))}\n</script>\n"
        f"<script>\n{_inline_script(boot)}</script>\n</body>\n</html>\n"
    )


def write_viewer_html(
    image_path: str | os.PathLike, html_path: str | os.PathLike, overwrite: bool = False, **view_options
) -> Path:
    """Write the self-contained viewer page (image inlined) to ``html_path``; never clobbers unless
    ``overwrite``. ``view_options``: ``title``, ``yaw``, ``pitch``, ``hfov`` (degrees, None = the
    file's GPano initial view). The target is checked (name free, folder writable) before the image
    is read."""
    check_html_target(html_path, overwrite)
    from ..io.export import apply_default_mode

    page = build_viewer_html(image_path, **view_options)
    path = atomic_write_text(html_path, page, overwrite=overwrite)
    apply_default_mode(path)
    return path


def check_html_target(html_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The viewer page can be written at ``html_path``: an .html name, free (or ``overwrite``), in a
    writable folder. Raises one-line errors; writes nothing."""
    from ..io.paths import check_output_target

    if Path(html_path).suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"--html {Path(html_path).name}: the viewer page needs an .html file name")
    return check_output_target(html_path, overwrite, flag="--html page")


class _PageHandler(BaseHTTPRequestHandler):
    page: bytes = b""

    def do_GET(self):
        if self.path.split("?")[0] not in ("/", "/index.html"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format, *args):  # quiet
        pass


def serve_page(page: str, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start serving ``page`` at ``http://host:port/`` in a background thread; returns the server
    (``server.server_address`` has the port; call ``server.shutdown()`` to stop)."""
    handler = type("PageHandler", (_PageHandler,), {"page": page.encode("utf-8")})
    try:
        server = ThreadingHTTPServer((host, int(port)), handler)
    except OSError as error:
        raise InvalidInputError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def open_viewer(
    image_path: str | os.PathLike, *, port: int = 0, open_browser: bool = True, block: bool = True,
    page: str | None = None, **view_options,
):
    """Serve the viewer page for ``image_path`` (or the ready ``page``, e.g. the depth mode's) on
    127.0.0.1 and open it in the default browser.

    With ``block`` (default) it serves until Ctrl+C and returns None; otherwise it returns the running
    server (stop it with ``server.shutdown()``). Used by ``pano360 view`` and ``pano360 generate --view``.
    """
    server = serve_page(page if page is not None else build_viewer_html(image_path, **view_options), port=port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"Viewing {image_path} at {url}" + ("  (Ctrl+C to stop)" if block else ""), flush=True)
    if open_browser:
        try:
            webbrowser.open(url)
        except webbrowser.Error:
            print("No browser found: open the address above yourself.", flush=True)
    if not block:
        return server
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return None


__all__ = ["DEFAULT_VIEW", "PanoramaExtent", "build_viewer_html", "initial_view", "open_viewer", "panorama_extent", "serve_page",
           "viewer_config", "write_viewer_html"]
