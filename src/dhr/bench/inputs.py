"""The benchmark's inputs: the image list, loading at the model's resolution, landmarks, framing.

The protocol of the inputs is in :mod:`dhr.bench.protocol`: the first ``n`` images of a folder
(or ``n`` spread over it), resized to the model's resolution R with a note (refused under
``strict``), the landmarks of the clean crop for DHR's face parser, and a check that the crops'
framing matches the model's alignment template.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dhr.errors import DHRError, ImageError
from dhr.faces.align import AlignTemplate
from dhr.faces.detect import crop_landmarks
from dhr.faces.framing import framing_of, framing_warning
from dhr.io.image import load_image

__all__ = [
    "FRAMING_SAMPLE",
    "IMAGE_SUFFIXES",
    "BenchImage",
    "check_framing",
    "check_sizes",
    "detect_landmarks",
    "list_images",
    "load_bench_image",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

FRAMING_SAMPLE = 8
"""Images whose landmarks are detected only for the framing check (when DHR's parser did not need them)."""


def list_images(folder: Path, n: int | None = None, *, spread: bool = False) -> list[Path]:
    """Image files of ``folder`` (sorted, not recursive), the first ``n`` (``spread``: ``n`` spread
    evenly over the sorted list, e.g. over UTKFace's age-first names).

    Raises:
        ImageError: Missing folder, not a folder, or no image file in it.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"data folder {folder} does not exist; pass a folder of aligned face images")
    if not folder.is_dir():
        raise ImageError(f"--data {folder} is not a folder; pass a folder of aligned face images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); "
                         "put aligned face crops there")
    if n is None or n >= len(files):
        return files
    if spread:
        return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    return files[:n]


@dataclass
class BenchImage:
    """One benchmark image at the model's resolution.

    Attributes:
        name: File name (the image's key in the report).
        pixels: ``(R, R, 3)`` uint8, the clean crop at model resolution.
        original_size: ``(width, height)`` of the file.
        notes: What was done to it (resized, no face found, ...), written into the report.
        landmarks: ``(68, 2)`` float64 landmarks at model resolution, or None (not detected).
    """

    name: str
    pixels: np.ndarray
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    landmarks: np.ndarray | None = None


def _refuse_size(name: str, w: int, h: int, R: int) -> ImageError:
    return ImageError(f"{name} is {w}x{h}, the model needs {R}x{R}; under --strict images are not resized "
                      "(resize them yourself or drop --strict)")


def check_sizes(files: Sequence[Path], R: int) -> None:
    """Refuses, before any work, a run under ``strict`` where an image would need resizing.

    Reads only the headers; unreadable files are skipped here (the run records them as failures).

    Raises:
        ImageError: The first file that is not ``R x R``.
    """
    for f in files:
        try:
            with Image.open(f) as im:
                size = im.size
        except OSError:
            continue
        if size != (R, R):
            raise _refuse_size(f.name, size[0], size[1], R)


def load_bench_image(path: Path, R: int, strict: bool) -> BenchImage:
    """Loads ``path`` at the model's resolution: centre-cropped to a square and resized (Lanczos)
    with a note and a warning when it is not ``R x R``.

    Raises:
        ImageError: Unreadable file, or under ``strict`` a file of another size.
    """
    photo = load_image(path)
    px = photo.pixels
    h, w = px.shape[:2]
    notes = list(getattr(photo, "notes", ()))
    if (h, w) != (R, R):
        if strict:
            raise _refuse_size(path.name, w, h, R)
        im = Image.fromarray(px)
        if h != w:
            side = min(h, w)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            notes.append(f"not square ({w}x{h}): centre-cropped to {side}x{side}")
        im = im.resize((R, R), Image.LANCZOS)
        px = np.asarray(im, dtype=np.uint8).copy()
        notes.append(f"resized from {w}x{h} to {R}x{R}")
        logger.warning("benchmark: %s is %dx%d; resized to the model's %dx%d (use --strict to refuse)",
                       path.name, w, h, R, R)
    return BenchImage(path.name, px, (w, h), notes)


def detect_landmarks(item: BenchImage) -> None:
    """Sets ``item.landmarks``: dlib's 68 landmarks of the clean crop, detected on a copy upscaled to
    at least 256 px and scaled back to model resolution. No face found: a note, landmarks stay None.

    Raises:
        ImportError: dlib is not installed.
        DHRError: The detector's model file cannot be resolved.
    """
    R = item.pixels.shape[0]
    up = max(1, math.ceil(256 / R))
    big = np.asarray(Image.fromarray(item.pixels).resize((R * up, R * up), Image.BICUBIC))
    face = crop_landmarks(big, fallback="none")
    if face is None:
        item.notes.append("no face detected: DHR segmentation without a face parser")
        return
    item.landmarks = np.asarray(face.landmarks, dtype=np.float64) / up


def check_framing(items: Sequence[BenchImage], model: Any) -> dict[str, Any]:
    """Compares the crops' framing with the model's alignment template; warns on a mismatch.

    The crops are used as given (only resized), so a framing the model was not trained on (FFHQ's
    looser crops for ``faces-64``) silently gives bad reconstructions. Uses the landmarks found for
    DHR's parser, else detects them on the first :data:`FRAMING_SAMPLE` images.

    Args:
        items: The run's images.
        model: The :class:`dhr.models.zoo.FaceModel` (its ``template`` and ``resolution``).

    Returns:
        ``{"template", "checked", "median_scale", "median_shift", "matches", "warning"}`` for the report.
    """
    template = (AlignTemplate.from_dict(dict(model.template)) if model.template
                else AlignTemplate.ffhq(model.resolution))
    with_lm = [it for it in items if it.landmarks is not None]
    if not with_lm:
        for it in items[:FRAMING_SAMPLE]:
            try:
                detect_landmarks(it)
            except (DHRError, ImportError) as e:
                logger.info("benchmark: framing check skipped for %s: %s", it.name, e)
        with_lm = [it for it in items if it.landmarks is not None]
    framings = [framing_of(it.landmarks, it.pixels.shape[0], template) for it in with_lm]
    warning = framing_warning(framings, template, what="the benchmark images")
    if warning:
        logger.warning("benchmark: %s", warning)
    return {"template": template.name, "checked": len(framings),
            "median_scale": float(np.median([f.scale for f in framings])) if framings else None,
            "median_shift": float(np.median([f.shift for f in framings])) if framings else None,
            "matches": None if not framings else warning is None, "warning": warning}
