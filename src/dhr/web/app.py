"""The web UI: upload a photo, see the aligned face, the part kept out of the GAN and the
inversion, move one slider per edit direction, download the pasted result and the bundle.

The logic lives in :class:`~dhr.web.backend.WebBackend` (plain Python, no gradio, in
:mod:`dhr.web.backend`, whose names are re-exported here), so it is testable without a browser;
:func:`build_app` wires it to gradio widgets and :func:`serve` starts a local server (127.0.0.1,
one job at a time through gradio's queue).

What a browser user sees is written for a browser user: errors name the uploaded file (never a
server path or an object), say what to do in the page, and never show a traceback
(:func:`plain_error`). Files are written per browser session under the work folder, deleted when
the tab closes, when the server stops, and oldest first above ``max_work_bytes``; gradio's own
cache of uploads and results is cleaned by gradio (``delete_cache``).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhr.errors import DHRError
from dhr.web.backend import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WORK_BYTES,
    OOD_COLOUR,
    BatchView,
    EditView,
    InvertView,
    UploadView,
    WebBackend,
    describe_pixels,
    is_unnamed_direction,
    mask_overlay,
    plain_error,
    plain_losses,
)

if TYPE_CHECKING:
    from dhr.pipeline import Pipeline

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_FILE_SIZE", "DEFAULT_MAX_WORK_BYTES", "OOD_COLOUR",
           "SLIDER_RANGE", "BatchView", "EditView", "InvertView", "UploadView", "WebBackend", "build_app", "is_unnamed_direction",
           "mask_overlay", "plain_error", "plain_losses", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
SLIDER_RANGE = (-3.0, 3.0)
DEFAULT_MAX_FILE_SIZE = "25mb"
"""Largest upload gradio accepts (``dhr serve --max-file-size``)."""
_INSTALL_HINT = "the web UI needs gradio: pip install gradio"
_UNEXPECTED = "Something went wrong on the server while {what}. Try again, or try another photo."


def _gradio():
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return gr


def _error_status(message: str) -> str:
    return f"**Error:** {message}"


_UNNAMED_HELP = ("These directions were found in the model without labels: `pc*` are its main directions of "
                 "variation (GANSpace), `sefa*` are read from the generator's weights (SeFa). What each one "
                 "changes depends on the model (pose, light, hair, ...): try small values.")


def build_app(pipe: Pipeline, *, workdir: str | Path | None = None, methods: Sequence[str] | None = None,
              max_pixels: int | None = None, max_file_size: str = DEFAULT_MAX_FILE_SIZE,
              max_work_bytes: int = DEFAULT_MAX_WORK_BYTES, max_batch: int = DEFAULT_MAX_BATCH):
    """The gradio ``Blocks`` app for ``pipe``.

    Two tabs: *One photo* (upload, invert, look at the mask and the inversion, edit with sliders,
    download) and *Several photos* (up to ``max_batch`` photos inverted together and given the same
    edit, shown in a gallery and downloaded as one ``.zip``; :meth:`WebBackend.batch`).

    A new upload (good or bad) clears every result and slider, and *Apply edit* only edits the
    inversion of the photo currently uploaded. Bad uploads (not an image, over ``max_pixels``) and
    failed inversions or edits are reported in the page's status boxes (``#status``,
    ``#edit-status``) in plain words; the server keeps serving. Each browser session's downloads
    are deleted when its tab closes, all of them when the server stops (and the work folder is
    capped at ``max_work_bytes``).

    Raises:
        ImportError: gradio is not installed (with the install command).
    """
    gr = _gradio()
    from dhr.config import METHODS

    backend = WebBackend(pipe, workdir, max_pixels=max_pixels, max_work_bytes=max_work_bytes, max_batch=max_batch)
    atexit.register(backend.close)
    named, unnamed = backend.split_directions()
    names = named + unnamed
    methods = list(methods or METHODS)

    def cleared(status: str) -> tuple:
        """Outputs of an upload after the preview: the status, then everything of the previous photo
        goes (state, aligned, mask, inversion, crop, pasted, files, edit status) and the sliders go to 0."""
        return (status, None, None, None, None, None, None, None, "", *([0.0] * len(names)))

    def do_upload(path):
        if path is None:
            return (None, *cleared(""))
        try:
            view = backend.check(path)
        except DHRError as e:
            logger.info("upload refused: %s", e)
            return (None, *cleared(_error_status(str(e))))
        except Exception:  # noqa: BLE001 - never a traceback in the page
            logger.exception("upload failed")
            return (None, *cleared(_error_status(_UNEXPECTED.format(what="reading this file"))))
        return (view.preview, *cleared(view.status))

    def do_invert(path, method, whole, face, ood, progress=gr.Progress()):
        def report(stage: str, step: int, total: int, info: dict) -> None:
            progress((step, total), desc=stage)

        try:
            view = backend.invert(path, method, whole, face, progress=report, ood_mask=ood)
        except DHRError as e:
            logger.info("inversion refused: %s", e)
            return None, None, None, None, _error_status(str(e))
        except Exception:  # noqa: BLE001 - e.g. out of memory: logged here, plain words in the page
            logger.exception("inversion failed")
            return None, None, None, None, _error_status(_UNEXPECTED.format(what="inverting this photo"))
        # The state remembers which upload it belongs to: an edit after a new upload is refused.
        return {"inv": view.result, "photo": path}, view.aligned, view.mask, view.inversion, view.status

    def do_edit(request, state, path, *values):
        try:
            if not state or state.get("photo") != path:
                from dhr.errors import EditError

                raise EditError("Press *Invert* first: the photo on the left has not been inverted yet.")
            session = getattr(request, "session_hash", None)
            view = backend.edit(state["inv"], dict(zip(names, values)), session=session)
        except DHRError as e:
            logger.info("edit refused: %s", e)
            return None, None, None, _error_status(plain_error(e))
        except Exception:  # noqa: BLE001
            logger.exception("edit failed")
            return None, None, None, _error_status(_UNEXPECTED.format(what="editing"))
        return view.crop, view.pasted, view.files, view.status

    def do_batch(request, paths, method, whole, *values, progress=gr.Progress()):
        def report(stage: str, step: int, total: int, info: dict) -> None:
            progress((step, total), desc=stage)

        try:
            session = getattr(request, "session_hash", None)
            view = backend.batch(paths, dict(zip(names, values)), method, bool(whole), session=session,
                                 progress=report)
        except DHRError as e:
            logger.info("batch refused: %s", e)
            return None, None, _error_status(plain_error(e))
        except Exception:  # noqa: BLE001
            logger.exception("batch failed")
            return None, None, _error_status(_UNEXPECTED.format(what="inverting these photos"))
        return view.gallery, view.archive, view.status

    def end_session(request):
        backend.end_session(getattr(request, "session_hash", None))

    # gradio passes the request (its session hash) to a parameter annotated gr.Request (set to the real
    # class here because this module's annotations are strings); it must come first, before *values.
    do_edit.__annotations__["request"] = gr.Request
    do_batch.__annotations__["request"] = gr.Request
    end_session.__annotations__["request"] = gr.Request

    size_note = (f"JPEG, PNG, WebP, TIFF or BMP, up to {max_file_size.upper().replace('MB', ' MB')} and "
                 f"{describe_pixels(backend.max_pixels)}")
    with gr.Blocks(title="dhr: invert and edit a photo", analytics_enabled=False,
                   delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"**dhr**: put a face into the `{pipe.model.name}` GAN ({pipe.resolution} px) and edit it. "
                    "1 Upload a photo, 2 *Invert*, 3 move sliders and *Apply edit*.", elem_id="intro")
        state = gr.State(None)
        with gr.Tab("One photo", elem_id="tab-one"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=280):
                    photo = gr.File(label=f"1. Photo ({size_note})", file_types=["image"], type="filepath",
                                    elem_id="photo", height=110)
                    preview = gr.Image(label="Uploaded photo", type="pil", elem_id="preview", interactive=False,
                                       height=190)
                    invert_btn = gr.Button("2. Invert", variant="primary", elem_id="invert")
                    status = gr.Markdown(elem_id="status")
                    with gr.Accordion("Options", open=False, elem_id="options"):
                        method = gr.Dropdown(methods, value=pipe.config.method, label="Method", elem_id="method")
                        whole = gr.Checkbox(value=True, label="Use the whole image when no face is found",
                                            elem_id="whole")
                        face = gr.Number(value=0, precision=0, minimum=0, label="Face (0 = largest)", elem_id="face")
                        ood = gr.File(label="Your own mask of what to keep out of the GAN (white; the photo's size; "
                                      "method dhr)", file_types=["image"], type="filepath", elem_id="ood-mask")
                with gr.Column(scale=5, min_width=300):
                    with gr.Row():
                        aligned = gr.Image(label="Aligned face", type="pil", elem_id="aligned", interactive=False,
                                           height=170)
                        mask = gr.Image(label="Kept out of the GAN (red)", type="pil", elem_id="mask",
                                        interactive=False, height=170)
                        recon = gr.Image(label="Inversion", type="pil", elem_id="inversion", interactive=False,
                                         height=170)
                    with gr.Row():
                        pasted = gr.Image(label="Edited photo", type="pil", elem_id="pasted", interactive=False,
                                          height=260)
                        crop = gr.Image(label="Edited face", type="pil", elem_id="crop", interactive=False, height=260)
                    files = gr.File(label="Downloads (edited photo, face, bundle)", file_count="multiple",
                                    elem_id="files", interactive=False, height=110)
                with gr.Column(scale=3, min_width=240):
                    sliders = [gr.Slider(SLIDER_RANGE[0], SLIDER_RANGE[1], value=0.0, step=0.1, label=n,
                                         elem_id=f"slider-{n}") for n in named]
                    edit_btn = gr.Button("3. Apply edit", variant="primary", elem_id="edit")
                    edit_status = gr.Markdown(elem_id="edit-status")
                    if unnamed:
                        with gr.Accordion(f"More directions ({len(unnamed)}, unnamed)", open=False,
                                          elem_id="advanced"):
                            gr.Markdown(_UNNAMED_HELP)
                            sliders += [gr.Slider(SLIDER_RANGE[0], SLIDER_RANGE[1], value=0.0, step=0.1, label=n,
                                                  elem_id=f"slider-{n}") for n in unnamed]
        with gr.Tab("Several photos", elem_id="tab-many"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=280):
                    photos = gr.File(label=f"Photos (up to {backend.max_batch}; {size_note} each)",
                                     file_types=["image"], file_count="multiple", type="filepath",
                                     elem_id="photos", height=140)
                    batch_method = gr.Dropdown(methods, value=pipe.config.method, label="Method",
                                               elem_id="batch-method")
                    batch_whole = gr.Checkbox(value=True, label="Use the whole image when no face is found",
                                              elem_id="batch-whole")
                    batch_sliders = [gr.Slider(SLIDER_RANGE[0], SLIDER_RANGE[1], value=0.0, step=0.1, label=n,
                                               elem_id=f"batch-slider-{n}") for n in named]
                    if unnamed:
                        with gr.Accordion(f"More directions ({len(unnamed)}, unnamed)", open=False,
                                          elem_id="batch-advanced"):
                            gr.Markdown(_UNNAMED_HELP)
                            batch_sliders += [gr.Slider(SLIDER_RANGE[0], SLIDER_RANGE[1], value=0.0, step=0.1,
                                                        label=n, elem_id=f"batch-slider-{n}") for n in unnamed]
                    batch_btn = gr.Button("Invert and edit all", variant="primary", elem_id="batch-run")
                with gr.Column(scale=8, min_width=320):
                    batch_status = gr.Markdown(elem_id="batch-status")
                    gallery = gr.Gallery(label="Edited photos", elem_id="gallery", columns=4, height=360,
                                         object_fit="contain")
                    archive = gr.File(label="Download all (.zip: edited photo, face and bundle of each)",
                                      elem_id="archive", interactive=False, height=80)
        results = [state, aligned, mask, recon, crop, pasted, files, edit_status]
        photo.change(do_upload, [photo], [preview, status, *results, *sliders])
        invert_btn.click(do_invert, [photo, method, whole, face, ood], [state, aligned, mask, recon, status])
        edit_btn.click(do_edit, [state, photo, *sliders], [crop, pasted, files, edit_status])
        batch_btn.click(do_batch, [photos, batch_method, batch_whole, *batch_sliders], [gallery, archive, batch_status])
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.dhr_backend = backend  # for tests and callers that want to clean up early
    return demo


def serve(model: str | Path = "faces-64", *, host: str = DEFAULT_HOST, port: int = 7860, device: str = "auto",
          config: Any = None, seed: int = 0, block: bool = True, max_file_size: str = DEFAULT_MAX_FILE_SIZE,
          max_pixels: int | None = None, max_work_bytes: int = DEFAULT_MAX_WORK_BYTES, parser: str = "auto",
          trust_parser: bool = False, coarse_perceptual: str | None = None, paste_mode: str = "auto",
          max_batch: int = DEFAULT_MAX_BATCH):
    """Starts the UI on ``http://host:port`` (127.0.0.1 by default: not reachable from other machines).

    Args:
        model: Model name or folder.
        host: Interface to bind; keep the default unless you know the network is trusted.
        port: TCP port.
        device: See :func:`dhr.pipeline.resolve_device`.
        config: Inversion config (object, dict or file).
        seed: Random seed.
        block: Wait until interrupted; False returns the running app (call ``.close()``).
        max_file_size: Largest accepted upload file (shown once, next to the upload box).
        max_pixels: Largest accepted photo (width x height); default
            :data:`dhr.io.image.DEFAULT_MAX_PIXELS`.
        max_work_bytes: Size cap of the folder of downloads (all sessions).
        max_batch: Most photos the *Several photos* tab takes at once.
        parser / trust_parser / coarse_perceptual / paste_mode: As :class:`dhr.Pipeline` (the face
            parser of DHR's segmentation, the coarse inversion's metric, how edits are pasted).
    """
    from dhr.pipeline import Pipeline
    from dhr.threads import applied_settings, configure_threads

    if applied_settings() is None:  # called from Python, not through `dhr serve`: dhr's thread choice
        configure_threads()
    if host not in (DEFAULT_HOST, "localhost", "::1"):
        logger.warning("binding the dhr web UI to %s: anyone who can reach this address can use it", host)
    pipe = Pipeline.from_pretrained(model, device=device, config=config, seed=seed, parser=parser,
                                    trust_parser=trust_parser, coarse_perceptual=coarse_perceptual,
                                    paste_mode=paste_mode)
    from dhr.threads import fit_threads_to_model

    fit_threads_to_model(getattr(pipe.generator.config, "synthesis_macs", float("inf")))
    demo = build_app(pipe, max_pixels=max_pixels, max_file_size=max_file_size, max_work_bytes=max_work_bytes,
                     max_batch=max_batch)
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, share=False,
                    inbrowser=False, show_error=False, max_file_size=max_file_size)
    finally:
        if block:
            demo.dhr_backend.close()
    return demo
