"""``pano360 serve``: a Gradio page over :class:`~pano360.web.service.PanoramaService`.

Prompt, negative prompt, method, preset, size, steps, seed → a progress bar, the panorama in the
project's offline 360 viewer (:mod:`pano360.viewer`, in an iframe), downloads (the PNG with its GPano
XMP, the JSON sidecar, a cube-map zip), and a gallery of earlier results in the output folder with
their parameters. Gradio brings the request queue (one request at a time: one model, one device) and
an HTTP API (``/generate``, ``/result``; see the page's "Use via API" link, or ``gradio_client``).

Gradio is an optional extra: ``pip install "pano360[web]"``.
"""

from __future__ import annotations

import html
import inspect
import os
import sys
import traceback
from pathlib import Path

from ..errors import InvalidInputError, Pano360Error
from .service import DEFAULT_MAX_UPLOAD_BYTES, PanoramaService

VIEWER_HEIGHT_PX = 480


def require_gradio():
    """Import Gradio, or explain how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never phone home
    try:
        import gradio
    except ImportError as error:
        raise InvalidInputError(f'the web app needs Gradio ({error}); install it with: pip install "pano360[web]"') \
            from None
    return gradio


def viewer_iframe(image: Path) -> str:
    """The self-contained viewer page of ``image`` in an iframe (its own document, so Pannellum's
    script runs and its styles stay inside)."""
    from ..viewer import build_viewer_html

    page = build_viewer_html(image, title=image.name)
    return (f'<iframe class="pano360-viewer" title="360° view of {html.escape(image.name)}" '
            f'style="width:100%;height:{VIEWER_HEIGHT_PX}px;border:0" srcdoc="{html.escape(page, quote=True)}">'
            "</iframe>")


def _user_error(error: BaseException):
    """A failed request: the message on the page, the traceback (for bugs) on the server's stderr."""
    import gradio as gr

    if isinstance(error, Pano360Error):
        return gr.Error(str(error))
    traceback.print_exception(error, file=sys.stderr)
    return gr.Error(f"{type(error).__name__}: {error}")


def build_app(service: PanoramaService):
    """The Gradio Blocks app (not launched)."""
    gr = require_gradio()
    from ..backbones.schedulers import DEFAULT_SCHEDULER
    from ..methods import available_methods
    from ..presets import PRESETS

    info = service.generator.backbone.info
    native = info.native_size

    def outputs_for(result):
        return (viewer_iframe(result.image), str(result.image), str(result.sidecar), str(result.cubemap_zip),
                result.parameters, service.gallery())

    def generate(prompt, negative_prompt, method, preset, height, width, steps, guidance, seed, depth=None,
                 progress=gr.Progress()):  # noqa: B008 - Gradio injects the progress tracker this way
        try:
            result = service.generate(prompt, negative_prompt, method, None if preset == "none" else preset,
                                      height, width, steps, guidance, seed, depth=depth,
                                      on_step=lambda done, total: progress(done / total, desc=f"step {done}/{total}"))
        except Exception as error:  # noqa: BLE001 - every failure is shown, the server goes on
            raise _user_error(error) from None
        return outputs_for(result)

    def show(name):
        try:
            return outputs_for(service.result(name))
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None

    blocks_kwargs = {"title": "pano360", "analytics_enabled": False}
    with gr.Blocks(**blocks_kwargs) as app:
        gr.Markdown(f"# pano360\nSeamless 360° panoramas: model `{service.model_name}` ({info.family}); results "
                    f"are saved in `{service.out_dir}`.")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="pano360-prompt",
                                    placeholder="a cozy cabin interior, warm light")
                negative = gr.Textbox(label="Negative prompt", lines=1)
                with gr.Row():
                    method = gr.Dropdown(available_methods(), value="circular", label="Method")
                    preset = gr.Dropdown(["none", *sorted(PRESETS)], value="none", label="Preset")
                with gr.Row():
                    height = gr.Number(native, label="Height (px)", precision=0, minimum=8, step=8, elem_id="pano360-height")
                    width = gr.Number(2 * native, label="Width (px)", precision=0, minimum=8, step=8, elem_id="pano360-width")
                with gr.Row():
                    steps = gr.Number(50, label="Steps", precision=0, minimum=1, elem_id="pano360-steps")
                    guidance = gr.Number(7.5, label="Guidance")
                    seed = gr.Number(-1, label="Seed (-1: random)", precision=0)
                inputs = [prompt, negative, method, preset, height, width, steps, guidance, seed]
                if service.needs_depth:
                    inputs.append(gr.Image(type="filepath", label="Depth map (PNG/JPEG)", sources=["upload"]))
                run = gr.Button("Generate", variant="primary", elem_id="pano360-generate")
                gr.Markdown(f"Sampler: {DEFAULT_SCHEDULER}. The same request gives the same file, so a "
                            "repeated request returns the earlier result.")
            with gr.Column(scale=2):
                viewer = gr.HTML(elem_id="pano360-viewer", label="360° view")
                with gr.Row():
                    image_file = gr.File(label="Panorama (PNG with 360 XMP)")
                    sidecar_file = gr.File(label="Parameters (JSON sidecar)")
                    cubemap_file = gr.File(label="Cube map (zip of 6 faces)")
                parameters = gr.JSON(label="Parameters")
        gallery = gr.Gallery(value=service.gallery, label="Earlier results", columns=6, height=260,
                             allow_preview=False, elem_id="pano360-gallery")
        name = gr.Textbox(visible=False)
        outputs = [viewer, image_file, sidecar_file, cubemap_file, parameters, gallery]
        run.click(generate, inputs, outputs, api_name="generate", concurrency_limit=1)
        prompt.submit(generate, inputs, outputs, api_name=False, concurrency_limit=1)

        def pick(evt):
            return service.gallery()[evt.index][0].name

        pick.__annotations__ = {"evt": gr.SelectData}  # Gradio passes the selection by this annotation

        gallery.select(pick, None, name, api_name=False).then(show, name, outputs, api_name=False)
        name.submit(show, name, outputs, api_name="result")
    return app


def launch(service: PanoramaService, host: str = "127.0.0.1", port: int | None = None,
           max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, block: bool = True):
    """Queue (one request at a time) and serve the app; only the output folder is served as files."""
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    kwargs = {"server_name": host, "server_port": port, "allowed_paths": [str(service.out_dir)],
              "max_file_size": max_upload_bytes, "prevent_thread_lock": not block, "show_error": True,
              "quiet": False}
    accepted = inspect.signature(app.launch).parameters
    if "ssr_mode" in accepted:
        kwargs["ssr_mode"] = False  # no Node.js server
    if "footer_links" in accepted:
        kwargs["footer_links"] = ["api"]
    app.launch(**{key: value for key, value in kwargs.items() if key in accepted})
    return app
