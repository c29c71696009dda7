"""The web UI: upload a photo, see the aligned face, the domain mask and the inversion, move one
slider per edit direction, download the pasted result and the bundle.

The logic lives in :class:`WebBackend` (plain Python, no gradio), so it is testable without a
browser; :func:`build_app` wires it to gradio widgets and :func:`serve` starts a local server
(127.0.0.1, one job at a time through gradio's queue).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhr.errors import DHRError

if TYPE_CHECKING:
    from PIL import Image

    from dhr.pipeline import PhotoInversion, Pipeline

__all__ = ["DEFAULT_HOST", "SLIDER_RANGE", "EditView", "InvertView", "UploadView", "WebBackend", "build_app",
           "serve"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
SLIDER_RANGE = (-3.0, 3.0)
_INSTALL_HINT = "the web UI needs gradio: pip install gradio"


@dataclass(frozen=True)
class UploadView:
    """What the UI shows after an upload: a preview of the photo and a status line."""

    preview: Image.Image
    status: str


@dataclass(frozen=True)
class InvertView:
    """What the UI shows after an inversion."""

    result: PhotoInversion
    aligned: Image.Image
    mask: Image.Image | None
    inversion: Image.Image
    status: str


@dataclass(frozen=True)
class EditView:
    """What the UI shows after an edit: the crop, the pasted photo and the files to download."""

    crop: Image.Image
    pasted: Image.Image | None
    files: list[str]
    status: str


def _upscale(img: Image.Image, size: int = 256) -> Image.Image:
    """Nearest-neighbour enlargement of small crops for display (the pixels stay visible)."""
    from PIL import Image as PILImage

    if img.width >= size:
        return img
    factor = max(1, size // img.width)
    return img.resize((img.width * factor, img.height * factor), PILImage.NEAREST)


class WebBackend:
    """The UI's actions on one pipeline; files go to ``workdir`` (a fresh temporary folder by default).

    Args:
        pipe: The pipeline.
        workdir: Where downloads are written.
        max_pixels: Uploads with more pixels (width x height) are refused with an
            :class:`~dhr.errors.ImageError` (default :data:`dhr.io.image.DEFAULT_MAX_PIXELS`).
    """

    def __init__(self, pipe: Pipeline, workdir: str | Path | None = None, max_pixels: int | None = None) -> None:
        from dhr.errors import ConfigError
        from dhr.io.image import DEFAULT_MAX_PIXELS

        if max_pixels is None:
            max_pixels = DEFAULT_MAX_PIXELS
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.max_pixels = max_pixels
        self.pipe = pipe
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dhr-web-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def direction_names(self) -> list[str]:
        """Names of the model's edit directions (empty when it has none)."""
        d = self.pipe.model.directions
        return [] if d is None else d.names()

    def load(self, path: str | Path | None):
        """Reads an upload as a :class:`~dhr.io.image.Photo`, within the pixel limit.

        Raises:
            ImageError: No file, not an image (whatever its name says), corrupt, or more than
                ``max_pixels`` pixels.
        """
        from dhr.errors import ImageError
        from dhr.io.image import load_image

        if path is None:
            raise ImageError("upload a photo first")
        return load_image(path, max_pixels=self.max_pixels)

    def check(self, path: str | Path | None) -> UploadView:
        """Validates an upload right away so a bad file is reported before anything runs.

        Raises:
            ImageError: See :meth:`load`.
        """
        from PIL import Image as PILImage

        photo = self.load(path)
        h, w = photo.pixels.shape[:2]
        status = f"photo `{Path(str(path)).name}`: {w}x{h} px; press *Invert*"
        notes = list(photo.notes)
        if notes:
            status += "  \n" + "  \n".join(f"note: {n}" for n in notes)
        return UploadView(preview=PILImage.fromarray(photo.pixels), status=status)

    def invert(self, path: str | Path | None, method: str = "dhr", whole_image: bool = True, face_index: int = 0,
               progress: Callable[[str, int, int, dict], None] | None = None,
               ood_mask: str | Path | None = None) -> InvertView:
        """Inverts face ``face_index`` (0 = largest) of the uploaded photo.

        ``ood_mask``: optional mask image of the photo's size, white = out of domain (replaces DHR's
        segmentation; see :meth:`dhr.pipeline.Pipeline.invert`).

        Raises:
            DHRError: No photo, unreadable photo or mask, no face (and ``whole_image`` off), bad option.
        """
        photo = self.load(path)
        inv = self.pipe.invert(photo, method=method, face_index=int(face_index), whole_image=bool(whole_image),
                               progress=progress, ood_mask=ood_mask or None)[0]
        lines = [f"**{inv.stem}**: method `{inv.method}`"]
        losses = inv.final_losses()
        if losses:
            lines.append("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        total = inv.timings.get("total_s")
        if total is not None:
            lines.append(f"inversion time: {total:.1f} s")
        lines += [f"note: {n}" for n in inv.notes]
        mask = inv.mask_image
        return InvertView(result=inv, aligned=_upscale(inv.aligned_image), mask=None if mask is None else _upscale(mask),
                          inversion=_upscale(inv.image), status="  \n".join(lines))

    def edit(self, inv: PhotoInversion | None, strengths: dict[str, float]) -> EditView:
        """Applies the slider strengths (zeros are left out), writes the downloads.

        Raises:
            DHRError: No inversion yet, or an unknown direction.
        """
        from dhr.errors import EditError

        if inv is None:
            raise EditError("invert a photo first")
        active = {k: float(v) for k, v in strengths.items() if float(v) != 0.0}
        res = self.pipe.edit(inv, active)
        tag = uuid.uuid4().hex[:8]
        folder = self.workdir / tag
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        crop_path = folder / f"{inv.stem}_{res.name}_crop.png"
        res.crop.save(crop_path)
        files.append(str(crop_path))
        if res.pasted is not None:
            pasted_path = folder / f"{inv.stem}_{res.name}.png"
            res.pasted.save(pasted_path)
            files.insert(0, str(pasted_path))
        st, js = self.pipe.save_bundle(inv, folder / inv.stem)
        files += [str(st), str(js)]
        status = f"edit `{res.name}`" + ("" if res.pasted is not None else " (no photo to paste into)")
        return EditView(crop=_upscale(res.crop), pasted=res.pasted, files=files, status=status)


def _gradio():
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return gr


def _error_status(e: Exception) -> str:
    return f"**Error:** {e}"


def build_app(pipe: Pipeline, *, workdir: str | Path | None = None, methods: Sequence[str] | None = None,
              max_pixels: int | None = None):
    """The gradio ``Blocks`` app for ``pipe``.

    Bad uploads (not an image, over ``max_pixels``) and failed inversions or edits are reported in
    the page's status box (``#status``, ``#edit-status``); the server keeps serving.

    Raises:
        ImportError: gradio is not installed (with the install command).
    """
    gr = _gradio()
    from dhr.config import METHODS

    backend = WebBackend(pipe, workdir, max_pixels=max_pixels)
    names = backend.direction_names()
    methods = list(methods or METHODS)

    def do_upload(path):
        if path is None:
            return None, ""
        try:
            view = backend.check(path)
        except DHRError as e:
            logger.info("upload refused: %s", e)
            return None, _error_status(e)
        return view.preview, view.status

    def do_invert(path, method, whole, face, ood, progress=gr.Progress()):
        def report(stage: str, step: int, total: int, info: dict) -> None:
            progress((step, total), desc=stage)

        try:
            view = backend.invert(path, method, whole, int(face or 0), progress=report, ood_mask=ood)
        except DHRError as e:
            logger.info("inversion refused: %s", e)
            return None, None, None, None, _error_status(e)
        return view.result, view.aligned, view.mask, view.inversion, view.status

    def do_edit(inv, *values):
        try:
            view = backend.edit(inv, dict(zip(names, values)))
        except DHRError as e:
            logger.info("edit refused: %s", e)
            return None, None, None, _error_status(e)
        return view.crop, view.pasted, view.files, view.status

    with gr.Blocks(title="dhr: invert and edit a photo", analytics_enabled=False) as demo:
        gr.Markdown(f"## dhr: invert and edit a photo\nModel `{pipe.model.name}` ({pipe.resolution} px) on "
                    f"`{pipe.device}`. Upload a photo, invert it, then move the sliders and apply the edit.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column():
                # A plain file input: the upload is checked by dhr (readable image, pixel limit) and
                # refused with a message in #status instead of failing inside gradio's image decoder.
                photo = gr.File(label="Photo", file_types=["image"], type="filepath", elem_id="photo")
                preview = gr.Image(label="Uploaded photo", type="pil", elem_id="preview", interactive=False)
                method = gr.Dropdown(methods, value=pipe.config.method, label="Method", elem_id="method")
                whole = gr.Checkbox(value=True, label="Use the whole image when no face is found", elem_id="whole")
                face = gr.Number(value=0, precision=0, minimum=0, label="Face (0 = largest)", elem_id="face")
                ood = gr.File(label="Optional out-of-domain mask (photo-sized, white = keep as is; method dhr)",
                              file_types=["image"], type="filepath", elem_id="ood-mask")
                invert_btn = gr.Button("Invert", variant="primary", elem_id="invert")
            with gr.Column():
                aligned = gr.Image(label="Aligned face", type="pil", elem_id="aligned", interactive=False)
                mask = gr.Image(label="Domain mask (white: in-domain)", type="pil", elem_id="mask", interactive=False)
                recon = gr.Image(label="Inversion", type="pil", elem_id="inversion", interactive=False)
        status = gr.Markdown(elem_id="status")
        sliders = [gr.Slider(SLIDER_RANGE[0], SLIDER_RANGE[1], value=0.0, step=0.1, label=n, elem_id=f"slider-{n}")
                   for n in names]
        edit_btn = gr.Button("Apply edit", variant="primary", elem_id="edit")
        with gr.Row():
            crop = gr.Image(label="Edited face", type="pil", elem_id="crop", interactive=False)
            pasted = gr.Image(label="Pasted into the photo", type="pil", elem_id="pasted", interactive=False)
        files = gr.File(label="Downloads (pasted photo, crop, bundle)", file_count="multiple", elem_id="files",
                        interactive=False)
        edit_status = gr.Markdown(elem_id="edit-status")
        photo.change(do_upload, [photo], [preview, status])
        invert_btn.click(do_invert, [photo, method, whole, face, ood], [state, aligned, mask, recon, status])
        edit_btn.click(do_edit, [state, *sliders], [crop, pasted, files, edit_status])
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def serve(model: str | Path = "faces-64", *, host: str = DEFAULT_HOST, port: int = 7860, device: str = "auto",
          config: Any = None, seed: int = 0, block: bool = True, max_file_size: str = "25mb",
          max_pixels: int | None = None):
    """Starts the UI on ``http://host:port`` (127.0.0.1 by default: not reachable from other machines).

    Args:
        model: Model name or folder.
        host: Interface to bind; keep the default unless you know the network is trusted.
        port: TCP port.
        device: See :func:`dhr.pipeline.resolve_device`.
        config: Inversion config (object, dict or file).
        seed: Random seed.
        block: Wait until interrupted; False returns the running app (call ``.close()``).
        max_file_size: Largest accepted upload file.
        max_pixels: Largest accepted photo (width x height); default
            :data:`dhr.io.image.DEFAULT_MAX_PIXELS`.
    """
    from dhr.pipeline import Pipeline

    if host not in (DEFAULT_HOST, "localhost", "::1"):
        logger.warning("binding the dhr web UI to %s: anyone who can reach this address can use it", host)
    pipe = Pipeline.from_pretrained(model, device=device, config=config, seed=seed)
    demo = build_app(pipe, max_pixels=max_pixels)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, share=False, inbrowser=False,
                show_error=True, max_file_size=max_file_size)
    return demo
