"""The web UI's logic, without gradio: uploads, inversion, edits, per-session files, plain errors.

:class:`WebBackend` does everything the page does, in plain Python, so it is testable without a
browser; :mod:`dhr.web.app` wires it to gradio widgets. What a browser user sees is written for a
browser user: errors name the uploaded file (never a server path or an object), say what to do in
the page, and never show a traceback (:func:`plain_error`). Files are written per browser session
under the work folder, deleted when the tab closes, when the server stops, and oldest first above
``max_work_bytes``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhr.errors import DHRError
from dhr.outputs import safe_stem

if TYPE_CHECKING:
    from PIL import Image

    from dhr.pipeline import PhotoInversion, Pipeline

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_WORK_BYTES", "OOD_COLOUR", "BatchView", "EditView", "InvertView",
           "UploadView", "WebBackend",
           "describe_pixels", "is_unnamed_direction", "mask_overlay", "plain_error", "plain_losses"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_WORK_BYTES = 200 * 1024 * 1024
"""Cap of the web UI's work folder (downloads of all sessions); oldest edits are deleted above it."""
DEFAULT_MAX_BATCH = 16
"""Most photos one press of *Invert and edit all* takes (``dhr serve --max-batch``)."""
OOD_COLOUR = (230, 40, 40)
"""Tint of the pixels kept out of the GAN in the mask overlay."""
_UNNAMED = re.compile(r"^(pc|sefa)\d+$")


@dataclass(frozen=True)
class UploadView:
    """What the UI shows after an upload: a preview of the photo and a status line."""

    preview: Image.Image
    status: str


@dataclass(frozen=True)
class InvertView:
    """What the UI shows after an inversion.

    Attributes:
        result: The inversion (kept in the page's state for the edits).
        aligned: The aligned crop, enlarged for display.
        mask: The crop with the pixels kept out of the GAN tinted (:func:`mask_overlay`), or None for
            methods without a domain mask.
        inversion: The reconstruction, enlarged for display.
        status: Markdown for the status box.
    """

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


@dataclass(frozen=True)
class BatchView:
    """What the UI shows after inverting and editing several photos.

    Attributes:
        gallery: ``(image, caption)`` per photo that came through, in upload order: the edited photo
            pasted back (the edited crop when there is no photo to paste into).
        archive: A ``.zip`` of every photo's files (edited photo, edited crop, bundle), or None when
            no photo came through.
        status: Markdown: one line per photo, what became of it (kept or the reason it failed).
    """

    gallery: list[tuple[Image.Image, str]]
    archive: str | None
    status: str


def _upscale(img: Image.Image, size: int = 256) -> Image.Image:
    """Nearest-neighbour enlargement of small crops for display (the pixels stay visible)."""
    from PIL import Image as PILImage

    if img.width >= size:
        return img
    factor = max(1, size // img.width)
    return img.resize((img.width * factor, img.height * factor), PILImage.NEAREST)


def describe_pixels(n: int) -> str:
    """``"12.3 megapixels"`` or ``"4,096 pixels"``."""
    return f"{n / 1e6:.3g} megapixels" if n >= 1_000_000 else f"{n:,} pixels"


def is_unnamed_direction(name: str, kind: str = "vector") -> bool:
    """True for directions found without labels (GANSpace ``pc*``, SeFa ``sefa*``), whose effect has no name."""
    return kind in ("ganspace", "sefa") or bool(_UNNAMED.match(name))


def mask_overlay(crop: Image.Image, mask: Image.Image, alpha: float = 0.6) -> Image.Image:
    """The crop with out-of-domain pixels (mask black) tinted :data:`OOD_COLOUR` and outlined.

    An all-white mask (nothing kept out) gives the crop itself, so the panel never looks empty.

    Args:
        crop: ``R x R`` RGB crop.
        mask: ``R x R`` ``L`` image, white = in-domain.
        alpha: Opacity of the tint.

    Returns:
        RGB image of the crop's size.
    """
    import numpy as np
    from PIL import Image as PILImage

    rgb = np.asarray(crop.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask.convert("L").resize(crop.size, PILImage.NEAREST), dtype=np.float32) / 255.0
    ood = (1.0 - m)[..., None] * alpha
    out = rgb * (1.0 - ood) + np.asarray(OOD_COLOUR, np.float32) * ood
    hard = m < 0.5
    edge = np.zeros_like(hard)
    edge[1:, :] |= hard[1:, :] != hard[:-1, :]
    edge[:, 1:] |= hard[:, 1:] != hard[:, :-1]
    out[edge & hard] = OOD_COLOUR
    return PILImage.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")


_LOSS_WORDS = {
    "loss_in": "face (redrawn by the GAN)",
    "loss_out": "rest of the crop (kept from your photo)",
    "lpips": "looks",
    "mse": "pixels",
}


def plain_losses(losses: dict[str, float]) -> str:
    """How close the inversion came to the photo, in words (empty when the method reports nothing).

    Only the differences a user can relate to are shown (``loss_in``, ``loss_out``, ``lpips``, ``mse``);
    regularisers and weighted totals are left out.
    """
    parts = [f"{words} {losses[key]:.2f}" for key, words in _LOSS_WORDS.items() if key in losses]
    if not parts:
        return ""
    return "Difference from your photo (0 = identical, lower is closer): " + ", ".join(parts)


_TECH_DETAIL = re.compile(r"\s*\((?:[^()]*\bobject at 0x[0-9a-fA-F]+[^()]*|cannot identify image file[^()]*|no decoder recognises its content)\)")
_OBJECT_REPR = re.compile(r"<[^<>]*\bobject at 0x[0-9a-fA-F]+>")
_ABS_DIRS = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"`<>()|,;:*?]+[/\\])+")
_CLI_ADVICE = re.compile(r"max_pixels|--[a-z]|pip install|\bPYTHONPATH\b|\bconfig\b|\bPATH\b|environment variable")


_UNEXPECTED_PHOTO = "something went wrong on the server with this photo; try it again alone, or another photo."


def _face_number(value: Any) -> int:
    """The *Face* option as an int >= 0 (gradio's Number may give a float, None or text)."""
    from dhr.errors import ConfigError

    try:
        number = float(value if value is not None else 0)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number >= 0 and number == int(number)):
        raise ConfigError(f"Face must be a whole number, 0 or more (0 = the largest face), not {value!r:.20}.")
    return int(number)


def _unique_names(names: list[str]) -> list[str]:
    """File names whose stems are made unique in order: a second ``a.jpg`` (or ``a.png``) becomes ``a-2.jpg``."""
    seen: set[str] = set()
    out = []
    for n in names:
        stem, suffix = Path(n).stem, Path(n).suffix
        candidate, k = stem, 2
        while candidate.lower() in seen:
            candidate = f"{stem}-{k}"
            k += 1
        seen.add(candidate.lower())
        out.append(candidate + suffix)
    return out


def plain_error(error: BaseException | str, *, names: dict[str, str] | None = None) -> str:
    """An error message a browser user can act on.

    Server paths become the file's own name (gradio keeps it as the last part of the temporary
    path), object reprs and decoder details are dropped, and clauses with command-line advice
    (``--options``, ``max_pixels``, ``pip install``) are left out.

    Args:
        error: The exception or its text.
        names: Extra replacements, e.g. ``{server_path: "photo.jpg"}``.

    Returns:
        One or more sentences, no server path, no ``0x`` address.
    """
    text = str(error)
    for raw, shown in (names or {}).items():
        if raw:
            text = text.replace(raw, shown)
    text = _TECH_DETAIL.sub("", text)
    text = _OBJECT_REPR.sub("the file", text)
    text = _ABS_DIRS.sub("", text)
    clauses = re.split(r"(?<=[.;])\s+", text.strip())
    kept = [c for c in clauses if not _CLI_ADVICE.search(c)] or [clauses[0]]
    text = " ".join(kept).strip()
    if _CLI_ADVICE.search(text):  # the only clause had CLI advice: keep its first part
        text = re.split(r";|, or ", text)[0].strip()
        text = re.sub(r"max_pixels=", "the limit of ", text)
    text = re.sub(r"\bpass (an?|the) ", r"upload \1 ", text)
    text = text.rstrip(";,: ")
    return text if text.endswith((".", "!", "?")) else text + "."


class WebBackend:
    """The UI's actions on one pipeline; files go to per-session folders under ``workdir``.

    Args:
        pipe: The pipeline.
        workdir: Where downloads are written (default: a fresh temporary folder, deleted by :meth:`close`).
        max_pixels: Uploads with more pixels (width x height) are refused with an
            :class:`~dhr.errors.ImageError` (default :data:`dhr.io.image.DEFAULT_MAX_PIXELS`).
        max_work_bytes: Size cap of ``workdir``: after each edit the oldest edit folders (of any
            session) are deleted until the folder is under it (default :data:`DEFAULT_MAX_WORK_BYTES`).
        max_batch: Most photos :meth:`batch` takes at once (default :data:`DEFAULT_MAX_BATCH`).
        batch_size: Photos :meth:`batch` inverts together (one :meth:`dhr.pipeline.Pipeline.invert_many`
            call); more photos are done in groups of this size.
    """

    def __init__(self, pipe: Pipeline, workdir: str | Path | None = None, max_pixels: int | None = None,
                 max_work_bytes: int = DEFAULT_MAX_WORK_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
                 batch_size: int = 4) -> None:
        from dhr.errors import ConfigError
        from dhr.io.image import DEFAULT_MAX_PIXELS

        if max_pixels is None:
            max_pixels = DEFAULT_MAX_PIXELS
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        for name, value in (("max_work_bytes", max_work_bytes), ("max_batch", max_batch), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.max_batch = max_batch
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_work_bytes = max_work_bytes
        self.pipe = pipe
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dhr-web-"))
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"web work folder {self.workdir} cannot be created ({e.strerror or e}); choose "
                              "another workdir") from None
        self._lock = threading.Lock()
        self._sessions: set[str] = set()

    # -- directions -----------------------------------------------------------------------

    def direction_names(self) -> list[str]:
        """Names of the model's edit directions (empty when it has none)."""
        d = self.pipe.model.directions
        return [] if d is None else d.names()

    def split_directions(self) -> tuple[list[str], list[str]]:
        """``(named, unnamed)`` direction names (see :func:`is_unnamed_direction`), in the model's order."""
        d = self.pipe.model.directions
        named, unnamed = [], []
        for n in self.direction_names():
            (unnamed if is_unnamed_direction(n, getattr(d[n], "kind", "vector")) else named).append(n)
        return named, unnamed

    # -- inputs ---------------------------------------------------------------------------

    def _pixel_limit_error(self, path: Path, what: str = "photo"):
        """An ImageError in page words when the image's header says it is over the pixel limit, else None."""
        import warnings

        from PIL import Image as PILImage

        from dhr.errors import ImageError

        limit = f"this page takes {what}s of up to {describe_pixels(self.max_pixels)}. Make it smaller and upload it again."
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with PILImage.open(path) as im:  # reads the header only
                    w, h = im.size
        except PILImage.DecompressionBombError:
            return ImageError(f"{path.name} is far too large (its header claims more than "
                              f"{describe_pixels(2 * (PILImage.MAX_IMAGE_PIXELS or 0))}); {limit}")
        except Exception:  # noqa: BLE001 - not an image: load_image says so in its own words
            return None
        if w * h <= self.max_pixels:
            return None
        return ImageError(f"{path.name} is {w}x{h} = {describe_pixels(w * h)}; {limit}")

    def load(self, path: str | Path | None, what: str = "photo"):
        """Reads an upload as a :class:`~dhr.io.image.Photo`, within the pixel limit.

        Raises:
            ImageError: No file, not an image (whatever its name says), corrupt, or more than
                ``max_pixels`` pixels; the message is :func:`plain_error`'s.
        """
        from dhr.errors import ImageError
        from dhr.io.image import load_image

        if path is None or not str(path) or "\x00" in str(path):
            raise ImageError(f"Upload a {what} first.")
        p = Path(str(path))
        err = self._pixel_limit_error(p, what) if p.is_file() else None
        if err is not None:
            raise err
        try:
            return load_image(p, max_pixels=self.max_pixels)
        except ImageError as e:
            raise ImageError(plain_error(e, names={str(p): p.name})) from None

    def check(self, path: str | Path | None) -> UploadView:
        """Validates an upload right away so a bad file is reported before anything runs.

        Raises:
            ImageError: See :meth:`load`.
        """
        from PIL import Image as PILImage

        photo = self.load(path)
        h, w = photo.pixels.shape[:2]
        status = f"Photo **{Path(str(path)).name}**: {w}x{h} px. Press *Invert*."
        notes = list(photo.notes)
        if notes:
            status += "  \n" + "  \n".join(f"Note: {n}" for n in notes)
        return UploadView(preview=PILImage.fromarray(photo.pixels), status=status)

    # -- actions --------------------------------------------------------------------------

    def invert(self, path: str | Path | None, method: str = "dhr", whole_image: bool = True, face_index: int = 0,
               progress: Callable[[str, int, int, dict], None] | None = None,
               ood_mask: str | Path | None = None) -> InvertView:
        """Inverts face ``face_index`` (0 = largest) of the uploaded photo.

        ``ood_mask``: optional mask image of the photo's size, white = out of domain (replaces DHR's
        segmentation; see :meth:`dhr.pipeline.Pipeline.invert`); it is read within the same limits as
        the photo (a decompression bomb is refused with a message).

        Raises:
            DHRError: No photo, unreadable photo or mask, no face (and ``whole_image`` off), bad option;
                messages are :func:`plain_error`'s.
        """
        from PIL import Image as PILImage

        from dhr.errors import FaceNotFoundError

        face_index = _face_number(face_index)
        photo = self.load(path)
        mask_img = None
        if ood_mask:
            mask_img = PILImage.fromarray(self.load(ood_mask, what="mask").pixels).convert("L")
        names = {str(path): Path(str(path)).name}
        try:
            inv = self.pipe.invert(photo, method=method, face_index=face_index, whole_image=bool(whole_image),
                                   progress=progress, ood_mask=mask_img)[0]
        except FaceNotFoundError as e:
            message = plain_error(e, names=names)
            if not whole_image and message.startswith("no usable face"):
                message = (f"No face found in {Path(str(path)).name}. Tick \"Use the whole image when no face is "
                           "found\" under Options, or upload a photo where the face is larger and upright.")
            e.args = (message,)
            raise
        except DHRError as e:
            e.args = (plain_error(e, names=names),)  # same type, page words
            raise
        lines = [f"**{inv.stem}** inverted with `{inv.method}`."]
        losses = plain_losses(inv.final_losses())
        if losses:
            lines.append(losses + ".")
        mask = inv.mask_image
        overlay = None
        if mask is not None:
            import numpy as np

            share = 1.0 - float(np.asarray(mask, dtype=np.float32).mean()) / 255.0
            overlay = mask_overlay(inv.aligned_image, mask)
            lines.append(f"Kept out of the GAN (red in the mask panel): {share:.0%} of the crop." if share > 0.005
                         else "Nothing was kept out of the GAN: the whole crop was redrawn.")
        total = inv.timings.get("total_s")
        if total is not None:
            lines.append(f"Took {total:.1f} s. Now move the sliders and press *Apply edit*.")
        lines += [f"Note: {plain_error(n, names=names)}" for n in inv.notes]
        return InvertView(result=inv, aligned=_upscale(inv.aligned_image),
                          mask=None if overlay is None else _upscale(overlay),
                          inversion=_upscale(inv.image), status="  \n".join(lines))

    def session_dir(self, session: str | None) -> Path:
        """The work folder of one browser session (``session`` is gradio's session hash)."""
        key = re.sub(r"[^A-Za-z0-9_-]", "_", session or "default")[:64] or "default"
        with self._lock:
            self._sessions.add(key)
        return self.workdir / key

    def edit(self, inv: PhotoInversion | None, strengths: dict[str, float], session: str | None = None) -> EditView:
        """Applies the slider strengths (zeros are left out), writes the downloads into the session's folder.

        Raises:
            DHRError: No inversion yet, or an unknown direction.
        """
        from dhr.errors import EditError

        if inv is None:
            raise EditError("Press *Invert* first: there is no inverted photo to edit yet.")
        active = self._active(strengths)
        res = self.pipe.edit(inv, active)
        folder = self.session_dir(session) / f"{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        stem = safe_stem(inv.stem)  # an upload's name may be as long as a file system allows
        crop_path = folder / f"{stem}_{res.name}_crop.png"
        res.crop.save(crop_path)
        files.append(str(crop_path))
        if res.pasted is not None:
            pasted_path = folder / f"{stem}_{res.name}.png"
            res.pasted.save(pasted_path)
            files.insert(0, str(pasted_path))
        st, js = self.pipe.save_bundle(inv, folder / stem)
        files += [str(st), str(js)]
        self.enforce_cap(keep=folder)
        what = "no edit (all sliders at 0)" if not active else ", ".join(f"{k} {v:+g}" for k, v in active.items())
        status = f"Edited: {what}." + ("" if res.pasted is not None else " (No photo to paste into.)")
        return EditView(crop=_upscale(res.crop), pasted=res.pasted, files=files, status=status)

    def batch(self, paths: list[str | Path] | None, strengths: dict[str, float], method: str = "dhr",
              whole_image: bool = True, session: str | None = None,
              progress: Callable[[str, int, int, dict], None] | None = None) -> BatchView:
        """Inverts the largest face of each uploaded photo, applies the same edit to all, zips the files.

        The photos are inverted ``batch_size`` at a time (:meth:`dhr.pipeline.Pipeline.invert_many`:
        each photo's result is what :meth:`invert` gives for it alone). A photo that cannot be read,
        has no face or fails in any other way is listed with the reason; the others are kept.

        Args:
            paths: The uploaded files (at most ``max_batch``).
            strengths: Direction name -> strength (zeros are left out; all zero keeps the reconstruction).
            method: Inversion method.
            whole_image: Use the whole image of a photo where no face is found.
            session: gradio's session hash (the files go to that session's folder).
            progress: ``progress(stage, step, total, info)`` after each photo, stage ``"photos"``.

        Returns:
            The :class:`BatchView`.

        Raises:
            DHRError: No photos, more than ``max_batch``, an unknown direction or method (before any
                work); messages are :func:`plain_error`'s.
        """
        import zipfile

        from dhr.checks import check_choice
        from dhr.config import METHODS
        from dhr.errors import ImageError

        if isinstance(paths, (str, Path)):  # one upload
            paths = [paths]
        if paths is not None and not isinstance(paths, (list, tuple)):
            raise ImageError("Upload one or more photos first.")
        paths = [Path(str(p)) for p in (paths or []) if p]
        if not paths:
            raise ImageError("Upload one or more photos first.")
        if len(paths) > self.max_batch:
            raise ImageError(f"{len(paths)} photos uploaded; this page takes up to {self.max_batch} at a time. "
                             "Upload fewer and press the button again.")
        try:
            active = self._active(strengths)
            check_choice(method, METHODS, "method")
        except DHRError as e:
            raise type(e)(plain_error(e)) from None
        shown = _unique_names([p.name for p in paths])
        outcome: list[str | None] = [None] * len(paths)  # an error message per failed photo
        notes: list[list[str]] = [[] for _ in paths]  # what alignment did (whole image, faces skipped)
        photos: list[tuple[int, object]] = []
        for i, p in enumerate(paths):
            try:
                photos.append((i, self.load(p)))
            except DHRError as e:
                outcome[i] = plain_error(e, names={str(p): shown[i], p.name: shown[i]})
        folder = self.session_dir(session) / f"{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True, exist_ok=True)
        gallery: list[tuple[Image.Image, str]] = []
        written: list[Path] = []
        done = sum(o is not None for o in outcome)
        if progress is not None:
            progress("photos", done, len(paths), {})
        for start in range(0, len(photos), self.batch_size):
            group = photos[start:start + self.batch_size]
            try:
                results = self.pipe.invert_many([ph for _, ph in group], method=method, face_index=0,
                                                whole_image=bool(whole_image))
            except DHRError as e:  # before any work: the same for every photo of the group
                results = [e] * len(group)
            for (i, _), res in zip(group, results):
                names = {str(paths[i]): shown[i], paths[i].name: shown[i]}
                try:
                    if isinstance(res, Exception):
                        raise res
                    gallery.append(self._batch_item(res[0], active, folder, shown[i], written))
                    notes[i] = [plain_error(n, names=names) for n in res[0].notes[:1]]  # alignment's own
                except DHRError as e:
                    outcome[i] = plain_error(e, names=names)
                except Exception:  # noqa: BLE001 - this photo only; logged, plain words in the page
                    logger.exception("batch: %s failed", paths[i])
                    outcome[i] = _UNEXPECTED_PHOTO
                done += 1
                if progress is not None:
                    progress("photos", done, len(paths), {})
        archive = None
        if written:
            archive = folder / f"dhr-{len(gallery)}-photos.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
                for f in written:
                    z.write(f, f.relative_to(folder).as_posix())
        self.enforce_cap(keep=folder)
        what = "no edit (all sliders at 0)" if not active else ", ".join(f"{k} {v:+g}" for k, v in active.items())
        ok = sum(o is None for o in outcome)
        lines = [f"{ok} of {len(paths)} photos inverted with `{method}` and edited: {what}."
                 + (" Download them all as one .zip below." if archive else "")]
        lines += [f"- **{shown[i]}**: " + (" ".join(["done.", *(f"Note: {n}" for n in notes[i])]) if o is None else o)
                  for i, o in enumerate(outcome)]
        return BatchView(gallery=gallery, archive=None if archive is None else str(archive), status="  \n".join(lines))

    def _batch_item(self, inv: PhotoInversion, active: dict[str, float], folder: Path, name: str,
                    written: list[Path]) -> tuple[Image.Image, str]:
        """Edits one inversion of :meth:`batch`, writes its files under ``folder/<name's stem>/``."""
        res = self.pipe.edit(inv, active)
        sub = folder / safe_stem(Path(name).stem)
        sub.mkdir(parents=True, exist_ok=True)
        stem = safe_stem(inv.stem)
        files = [sub / f"{stem}_{res.name}_crop.png"]
        res.crop.save(files[0])
        if res.pasted is not None:
            files.insert(0, sub / f"{stem}_{res.name}.png")
            res.pasted.save(files[0])
        files += list(self.pipe.save_bundle(inv, sub / stem))
        written += files
        caption = name + ("" if res.pasted is not None else " (face only)")
        return (res.pasted if res.pasted is not None else _upscale(res.crop)), caption

    def _active(self, strengths: Any) -> dict[str, float]:
        """The non-zero slider strengths, checked (names and numbers).

        Raises:
            EditError: Not a mapping, an unknown direction or a strength that is not a finite number.
        """
        from dhr.errors import EditError

        if not isinstance(strengths, Mapping):
            raise EditError(f"edit strengths must map direction names to numbers, got {type(strengths).__name__}")
        checked = self.pipe.validate_edits(strengths)
        return {k: v for k, v in checked.items() if v != 0.0}

    # -- cleanup --------------------------------------------------------------------------

    def work_bytes(self) -> int:
        """Bytes currently under ``workdir``."""
        return sum(f.stat().st_size for f in self.workdir.rglob("*") if f.is_file())

    def enforce_cap(self, keep: Path | None = None) -> list[Path]:
        """Deletes the oldest edit folders until ``workdir`` is under ``max_work_bytes``; never ``keep``.

        Returns:
            The deleted folders.
        """
        removed: list[Path] = []
        with self._lock:
            folders = sorted((d for s in self.workdir.iterdir() if s.is_dir() for d in s.iterdir() if d.is_dir()),
                             key=lambda d: d.stat().st_mtime)
            total = self.work_bytes()
            for d in folders:
                if total <= self.max_work_bytes:
                    break
                if keep is not None and d.resolve() == keep.resolve():
                    continue
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                shutil.rmtree(d, ignore_errors=True)
                total -= size
                removed.append(d)
        if removed:
            logger.info("web work folder over %d bytes: deleted %d old edit folders", self.max_work_bytes, len(removed))
        return removed

    def end_session(self, session: str | None) -> None:
        """Deletes a session's files (called when its browser tab closes)."""
        d = self.session_dir(session)
        with self._lock:
            self._sessions.discard(d.name)
        shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        """Deletes every session's files, and ``workdir`` itself when the backend created it."""
        with self._lock:
            sessions, self._sessions = set(self._sessions), set()
        for key in sessions:
            shutil.rmtree(self.workdir / key, ignore_errors=True)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
