"""``pano360 serve``: the panorama studio, a Gradio page over :class:`~pano360.web.service.PanoramaService`.

* **Create**: prompt, negative prompt, method, preset, size, steps, guidance, seed.
* **Photo → 360°**: upload a photo, place it (yaw, pitch, FoV; "Show placement" puts it on the
  sphere in the viewer), outpaint the rest, optionally refine the poles.
* **Edit**: paint a mask in the 360° viewer (Paint / Erase / brush size, in view space; the mask is
  equirect and follows the sphere), describe what goes there, inpaint; refine poles; upscale 2x;
  3D exports through ``pano360.spatial`` (disabled with the reason while it is not installed).
* **Gallery**: every result in the output folder; open, re-run from its sidecar, vary the seed, delete
  (moved to ``trash/``).
* **Queue**: Gradio's queue shows the position and its ETA; a running job shows step k/n and an ETA;
  Cancel stops it at the next step. At most ``concurrency`` jobs run at once (one model copy each).

Every job endpoint is in the HTTP API (see ``docs/studio.md``); limits, the rate limit and the login
are enforced for the page and the API alike. Gradio is an optional extra: ``pip install "pano360[web]"``.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

from ..errors import InvalidInputError, Pano360Error
from .limits import JobCancelled
from .service import DEFAULT_MAX_UPLOAD_BYTES, EXPORTS_3D, SPATIAL_MISSING, PanoramaService

VIEWER_HEIGHT_PX = 480
DEVICE = "device"  # the concurrency group of every job that uses the model

# The page's JavaScript: read the painted mask out of the viewer's iframe (same origin: srcdoc).
READ_MASK_JS = """(name, mask, ...rest) => {
  const frame = document.querySelector('#pano360-viewer iframe');
  let painted = '';
  try { painted = frame && frame.contentWindow.pano360Mask ? frame.contentWindow.pano360Mask() : ''; } catch (e) {}
  return [name, painted || mask, ...rest];
}"""


def require_gradio():
    """Import Gradio, or explain how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never phone home
    try:
        import gradio
    except ImportError as error:
        raise InvalidInputError(f'the web app needs Gradio ({error}); install it with: pip install "pano360[web]"') \
            from None
    return gradio


def viewer_iframe(image: Path, paint: bool = True, **view) -> str:
    """The self-contained viewer page of ``image`` in an iframe (its own document, so Pannellum's
    script runs and its styles stay inside), with the paint mode."""
    from ..viewer import build_viewer_html

    page = build_viewer_html(image, title=image.name, paint=paint, **view)
    return (f'<iframe class="pano360-viewer" title="360° view of {html.escape(image.name)}" '
            f'data-name="{html.escape(image.name)}" '
            f'style="width:100%;height:{VIEWER_HEIGHT_PX}px;border:0" srcdoc="{html.escape(page, quote=True)}">'
            "</iframe>")


def _user_error(error: BaseException):
    """A failed request: the message on the page, the traceback (for bugs) on the server's stderr."""
    import gradio as gr

    if isinstance(error, Pano360Error):
        return gr.Error(str(error))
    traceback.print_exception(error, file=sys.stderr)
    return gr.Error(f"{type(error).__name__}: {error}")


def _caller(request) -> tuple[str, str]:
    """(client for the rate limit: login or address, session for cancelling)."""
    if request is None:
        return "local", "local"
    user = getattr(request, "username", None)
    host = getattr(getattr(request, "client", None), "host", None) or "?"
    return (f"user:{user}" if user else f"ip:{host}"), (getattr(request, "session_hash", None) or host)


def build_app(service: PanoramaService):
    """The Gradio Blocks app (not launched)."""
    gr = require_gradio()
    from ..methods import available_methods
    from ..presets import PRESETS

    info = service.generator.backbone.info
    native = info.native_size
    from ..defaults import FAMILY_DEFAULTS

    default_steps, default_guidance = FAMILY_DEFAULTS.get(info.family, FAMILY_DEFAULTS["sd2"])
    limits = service.limits
    has_spatial = importlib.util.find_spec("pano360.spatial") is not None

    def outputs_for(result):
        return (viewer_iframe(result.image), str(result.image), str(result.sidecar), str(result.cubemap_zip),
                result.parameters, service.gallery())

    def job(run, request, progress, admit=True):
        """Run one job with the rate limit, progress (step k/n, ETA) and the user's messages."""
        client, session = _caller(request)
        started = [time.monotonic()]

        def waiting(ahead):  # for the device, with ``ahead`` jobs first; 0 = starting on it now
            started[0] = time.monotonic()
            progress(0.0, desc=f"waiting for the device: {ahead} job(s) first (shorter jobs go first)"
                     if ahead else "starting")

        def on_step(done, total):
            elapsed = time.monotonic() - started[0]
            eta = elapsed / max(done, 1) * (total - done)
            progress(done / total, desc=f"step {done}/{total} · ETA {eta:.0f} s")

        try:
            if admit:
                service.admit(client)
            service.waiters[session] = waiting
            try:
                return outputs_for(run(on_step, session))
            finally:
                if service.waiters.get(session) is waiting:
                    del service.waiters[session]
        except JobCancelled as error:
            raise gr.Error(str(error)) from None
        except Exception as error:  # noqa: BLE001 - every failure is shown, the server goes on
            raise _user_error(error) from None

    def annotate(fn):
        """Gradio finds its injected arguments by annotation (this module has string annotations)."""
        fn.__annotations__ = {"request": gr.Request}
        return fn

    def generate(prompt, negative_prompt, method, preset, height, width, steps, guidance, seed, depth=None,
                 request=None, progress=gr.Progress()):  # noqa: B008 - Gradio injects the progress tracker
        return job(lambda on_step, session: service.generate(
            prompt, negative_prompt, method, None if preset == "none" else preset, height, width, steps, guidance,
            seed, depth=depth, on_step=on_step, session=session), request, progress)

    def inpaint(name, mask, prompt, negative_prompt, steps, guidance, seed, request=None,
                progress=gr.Progress()):  # noqa: B008
        return job(lambda on_step, session: service.inpaint(
            name, mask, prompt, negative_prompt, steps, guidance, seed, on_step=on_step, session=session),
            request, progress)

    def outpaint(photo, prompt, negative_prompt, yaw, pitch, fov, height, steps, guidance, seed, refine,
                 request=None, progress=gr.Progress()):  # noqa: B008
        if not photo:
            raise gr.Error("upload a photo first (PNG or JPEG)")
        return job(lambda on_step, session: service.outpaint(
            photo, prompt, negative_prompt, yaw, pitch, fov, height, steps, guidance, seed, refine,
            on_step=on_step, session=session), request, progress)

    def poles(name, steps, request=None, progress=gr.Progress()):  # noqa: B008
        return job(lambda on_step, session: service.refine(name, "poles", steps=steps, on_step=on_step,
                                                           session=session), request, progress)

    def upscale(name, steps, request=None, progress=gr.Progress()):  # noqa: B008
        return job(lambda on_step, session: service.refine(name, "upscale", steps=steps, on_step=on_step,
                                                           session=session), request, progress)

    def rerun(name, request=None, progress=gr.Progress()):  # noqa: B008
        return job(lambda on_step, session: service.rerun(name, on_step=on_step, session=session), request, progress)

    def vary_seed(name, request=None, progress=gr.Progress()):  # noqa: B008
        return job(lambda on_step, session: service.vary_seed(name, on_step=on_step, session=session), request,
                   progress)

    def show(name):
        try:
            return outputs_for(service.result(name))
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None

    def delete(name):
        try:
            moved = service.delete(name)
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None
        return f"Moved {name} to trash/{moved.name}", service.gallery()

    def cancel(request=None):
        _, session = _caller(request)
        return "Cancelling: the job stops at its next step." if service.cancel(session) else "No job of yours is running."

    def place(photo, yaw, pitch, fov, height):
        """The photo on the sphere, nothing generated: where it will be before outpainting."""
        try:
            return viewer_iframe(service.placement_preview(photo, yaw, pitch, fov, height), paint=False,
                                 yaw=float(yaw or 0), pitch=float(pitch or 0))
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None

    def export(name, to):
        try:
            return str(service.export_3d(name, to))
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None

    for fn in (generate, inpaint, outpaint, poles, upscale, rerun, vary_seed, cancel):
        annotate(fn)
        fn.__annotations__["progress"] = gr.Progress
    cancel.__annotations__.pop("progress")

    number = {"precision": 0}
    with gr.Blocks(title="pano360 studio", analytics_enabled=False) as app:
        extras = "".join(f", {key} `{value}`" for key, value in service.model_keys.items())
        gr.Markdown(f"# pano360 studio\nSeamless 360° panoramas: model `{service.model_name}` ({info.family}){extras}; "
                    f"results are saved in `{service.out_dir}`. Limits: up to {limits.max_height}x"
                    f"{limits.max_width} px (HxW), {limits.max_steps} steps, {limits.max_prompt_chars} characters "
                    f"of prompt; {service.gate.limit} job(s) at a time.")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Create"):
                    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="pano360-prompt",
                                        placeholder="a cozy cabin interior, warm light",
                                        max_length=limits.max_prompt_chars)
                    negative = gr.Textbox(label="Negative prompt", lines=1, max_length=limits.max_prompt_chars)
                    with gr.Row():
                        method = gr.Dropdown(available_methods(), value="circular", label="Method")
                        preset = gr.Dropdown(["none", *sorted(PRESETS)], value="none", label="Preset")
                    with gr.Row():
                        height = gr.Number(min(native, limits.max_height), label="Height (px)", minimum=8,
                                           step=8, elem_id="pano360-height", **number)
                        width = gr.Number(min(2 * native, limits.max_width), label="Width (px)", minimum=8,
                                          step=8, elem_id="pano360-width", **number)
                    with gr.Row():
                        steps = gr.Number(min(default_steps, limits.max_steps), label="Steps", minimum=1,
                                          elem_id="pano360-steps", **number)
                        guidance = gr.Number(default_guidance, label="Guidance")
                        seed = gr.Number(-1, label="Seed (-1: random)", **number)
                    inputs = [prompt, negative, method, preset, height, width, steps, guidance, seed]
                    if service.needs_depth:
                        inputs.append(gr.Image(type="filepath", label="Depth map (PNG/JPEG)", sources=["upload"]))
                    run = gr.Button("Generate", variant="primary", elem_id="pano360-generate")
                    gr.Markdown(f"Sampler: {service.generator.scheduler_name}. The same request gives the same file, so a "
                                "repeated request returns the earlier result.")
                with gr.Tab("Photo → 360°"):
                    photo = gr.File(label="Photo (PNG/JPEG/WebP; checked for size and type on the server)",
                                    file_types=[".png", ".jpg", ".jpeg", ".webp"], type="filepath",
                                    elem_id="pano360-photo")
                    photo_prompt = gr.Textbox(label="What the whole panorama shows", elem_id="pano360-photo-prompt",
                                              max_length=limits.max_prompt_chars)
                    photo_negative = gr.Textbox(label="Negative prompt", max_length=limits.max_prompt_chars)
                    with gr.Row():
                        yaw = gr.Number(0, label="Yaw (°, + = right)", minimum=-180, maximum=180)
                        pitch = gr.Number(0, label="Pitch (°, + = up)", minimum=-90, maximum=90)
                        fov = gr.Number(90, label="Horizontal FoV (°)", minimum=1, maximum=179,
                                        elem_id="pano360-fov")
                    with gr.Row():
                        photo_height = gr.Number(min(native, limits.max_height), label="Height (px, width = 2x)",
                                                 minimum=64, step=8,
                                                 elem_id="pano360-photo-height", **number)
                        photo_steps = gr.Number(min(30, limits.max_steps), label="Steps", minimum=1,
                                                elem_id="pano360-photo-steps", **number)
                        photo_guidance = gr.Number(default_guidance, label="Guidance")
                        photo_seed = gr.Number(-1, label="Seed", **number)
                    refine = gr.Checkbox(True, label="Refine the poles", elem_id="pano360-refine")
                    with gr.Row():
                        preview = gr.Button("Show placement", elem_id="pano360-place")
                        outpaint_button = gr.Button("Outpaint to 360°", variant="primary", elem_id="pano360-outpaint")
                with gr.Tab("Edit"):
                    gr.Markdown("Open a result, press **Paint** in the viewer and paint over what should change "
                                "(Erase to undo; the brush size is in screen pixels). Describe what goes there, "
                                "then Inpaint: everything you did not paint stays exactly as it is.")
                    edit_prompt = gr.Textbox(label="What the painted region shows", elem_id="pano360-edit-prompt",
                                             max_length=limits.max_prompt_chars)
                    edit_negative = gr.Textbox(label="Negative prompt", max_length=limits.max_prompt_chars)
                    with gr.Row():
                        edit_steps = gr.Number(min(30, limits.max_steps), label="Steps", minimum=1,
                                               elem_id="pano360-edit-steps", **number)
                        edit_guidance = gr.Number(default_guidance, label="Guidance")
                        edit_seed = gr.Number(-1, label="Seed", **number)
                    inpaint_button = gr.Button("Inpaint the painted region", variant="primary",
                                               elem_id="pano360-inpaint")
                    with gr.Row():
                        poles_button = gr.Button("Refine poles", elem_id="pano360-poles")
                        upscale_button = gr.Button("Upscale 2x", elem_id="pano360-upscale")
                    gr.Markdown("**3D exports**" + ("" if has_spatial else f": {SPATIAL_MISSING}."))
                    with gr.Row():
                        export_kind = gr.Dropdown(list(EXPORTS_3D), value="depth", label="Export",
                                                  interactive=has_spatial, elem_id="pano360-export-kind")
                        export_button = gr.Button("Export", interactive=has_spatial, elem_id="pano360-export")
                    export_file = gr.File(label="3D export", interactive=False)
            with gr.Column(scale=2):
                viewer = gr.HTML(elem_id="pano360-viewer", label="360° view")
                with gr.Row():
                    current = gr.Textbox(label="Result shown (file name)", elem_id="pano360-current",
                                         interactive=False, scale=3)
                    cancel_button = gr.Button("Cancel job", variant="stop", elem_id="pano360-cancel", scale=1)
                status = gr.Markdown(elem_id="pano360-status")
                with gr.Row():
                    # downloads only: never an upload target
                    image_file = gr.File(label="Panorama (PNG with 360 XMP)", interactive=False)
                    sidecar_file = gr.File(label="Parameters (JSON sidecar)", interactive=False)
                    cubemap_file = gr.File(label="Cube map (zip of 6 faces)", interactive=False)
                parameters = gr.JSON(label="Parameters")
        gr.Markdown("## Gallery\nClick a result to open it; then re-run it from its sidecar, vary its seed, "
                    "or delete it (moved to `trash/` in the output folder).")
        gallery = gr.Gallery(value=service.gallery, label="Results", columns=6, height=260,
                             allow_preview=False, elem_id="pano360-gallery")
        with gr.Row():
            rerun_button = gr.Button("Re-run", elem_id="pano360-rerun")
            vary_button = gr.Button("Vary seed", elem_id="pano360-vary")
            delete_button = gr.Button("Delete (to trash)", variant="stop", elem_id="pano360-delete")
        mask = gr.Textbox(visible=False)  # the painted mask (PNG data URL), read from the viewer by READ_MASK_JS
        name = gr.Textbox(visible=False)

        outputs = [viewer, image_file, sidecar_file, cubemap_file, parameters, gallery]

        def shown(image_path):
            return Path(image_path).name if image_path else ""

        # the gate gets a few more requests than it runs, so that it can let a short one through
        jobs = {"concurrency_id": DEVICE, "concurrency_limit": service.gate.limit + service.gate.lookahead}
        events = []

        def on(trigger, fn, ins, api_name, js=None):
            event = trigger(fn, ins, outputs, api_name=api_name, js=js, **jobs)
            events.append(event)
            event.then(shown, image_file, current, api_name=False, queue=False)
            return event

        on(run.click, generate, inputs, "generate")
        on(prompt.submit, generate, inputs, False)
        on(inpaint_button.click, inpaint, [current, mask, edit_prompt, edit_negative, edit_steps, edit_guidance,
                                            edit_seed], "inpaint", js=READ_MASK_JS)
        on(outpaint_button.click, outpaint, [photo, photo_prompt, photo_negative, yaw, pitch, fov, photo_height,
                                              photo_steps, photo_guidance, photo_seed, refine], "outpaint")
        on(poles_button.click, poles, [current, edit_steps], "poles")
        on(upscale_button.click, upscale, [current, edit_steps], "upscale")
        on(rerun_button.click, rerun, [current], "rerun")
        on(vary_button.click, vary_seed, [current], "vary_seed")
        preview.click(place, [photo, yaw, pitch, fov, photo_height], viewer, api_name=False, queue=False)
        delete_button.click(delete, current, [status, gallery], api_name="delete", queue=False)
        # stops the caller's running job at its next step and drops the caller's waiting jobs from the queue
        cancel_button.click(cancel, None, status, api_name="cancel", queue=False, cancels=events)
        export_button.click(export, [current, export_kind], export_file, api_name="export_3d", **jobs)

        def pick(evt):
            return service.gallery()[evt.index][0].name

        pick.__annotations__ = {"evt": gr.SelectData}  # Gradio passes the selection by this annotation

        gallery.select(pick, None, name, api_name=False, queue=False).then(
            show, name, outputs, api_name=False, queue=False).then(shown, image_file, current, api_name=False,
                                                                   queue=False)
        name.submit(show, name, outputs, api_name="result", queue=False)
    return app


def launch(service: PanoramaService, host: str = "127.0.0.1", port: int | None = None,
           max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, block: bool = True, auth=None,
           max_queue: int = 100):
    """Queue and serve the app; only the output folder is served as files. ``auth``: Gradio's
    ``auth`` (a ``(user, password) -> bool`` callable or a list of pairs), required off loopback."""
    from .limits import check_exposure

    check_exposure(host, auth, None)
    app = build_app(service)
    app.queue(default_concurrency_limit=service.gate.limit, max_size=max_queue)
    kwargs = {"server_name": host, "server_port": port, "allowed_paths": [str(service.out_dir)],
              "max_file_size": max_upload_bytes, "prevent_thread_lock": not block, "show_error": True,
              "quiet": False, "auth": auth, "auth_message": "pano360 studio: log in (see pano360 serve --auth)"}
    accepted = inspect.signature(app.launch).parameters
    if "ssr_mode" in accepted:
        kwargs["ssr_mode"] = False  # no Node.js server
    if "footer_links" in accepted:
        kwargs["footer_links"] = ["api"]
    app.launch(**{key: value for key, value in kwargs.items() if key in accepted})
    return app
