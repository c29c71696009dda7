"""Face detection and 68-point landmarks with dlib.

Models come from the pip package ``face-recognition-models`` (HOG needs no file; the CNN
"mmod" detector, the 68-point shape predictor and the ResNet face descriptor are ``.dat``
files in its ``models/`` folder). The package is located with ``importlib.util.find_spec``
and never imported: its ``__init__`` uses ``pkg_resources``, which new setuptools removed.

Loaded dlib models are cached per process (``functools.lru_cache``).

Coordinates: pixel centres at integer positions, x = column, y = row (dlib's convention). The
68-point layout and the geometry built on it (:func:`five_points`, :func:`face_outline`,
:func:`convex_hull`) are in :mod:`dhr.faces.landmarks` and re-exported here.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dhr.checks import check_choice
from dhr.errors import FaceNotFoundError, WeightsError
from dhr.faces.landmarks import convex_hull, face_outline, five_points
from dhr.io.image import Photo

__all__ = [
    "MIN_FACE_SIZE",
    "DetectedFace",
    "SkippedFace",
    "Detection",
    "dlib_models_dir",
    "find_faces",
    "detect_faces",
    "detect_faces_retrying",
    "RETRIES",
    "detect_face",
    "predict_landmarks",
    "face_outline",
    "five_points",
    "crop_landmarks",
    "convex_hull",
    "dlib_model_file",
    "import_dlib",
    "raw_detections",
]

logger = logging.getLogger(__name__)

Detector = Literal["hog", "cnn"]

MIN_FACE_SIZE = 40
"""Smallest accepted face box side in photo pixels. Smaller faces carry too little detail for a
1024 px (or even 256 px) crop; they are reported in ``Detection.skipped`` and not aligned."""

DETECT_MAX_SIDE = 1600
"""Photos are downscaled to at most this long side for the detector (speed); landmarks are
always predicted at full resolution."""

_INSTALL_HINT = "install the face extras: pip install 'dhr[faces]' (dlib-bin and face-recognition-models)"


@dataclass(frozen=True)
class DetectedFace:
    """One detected face.

    Attributes:
        box: ``(left, top, right, bottom)`` in photo pixels (floats).
        score: Detector confidence (HOG: SVM margin, CNN: mmod confidence).
        landmarks: ``(68, 2)`` float64 (x, y) in photo pixels.
        index: Rank by box size, 0 = largest.
        detector: ``"hog"``, ``"cnn"`` or ``"given"``.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    index: int = 0
    detector: str = "hog"

    @property
    def size(self) -> float:
        """Geometric mean of the box width and height, in pixels."""
        left, top, right, bottom = self.box
        return float(np.sqrt(max(right - left, 0.0) * max(bottom - top, 0.0)))


@dataclass(frozen=True)
class SkippedFace:
    """A detection that was not used, and why."""

    box: tuple[float, float, float, float]
    score: float
    reason: str


@dataclass(frozen=True)
class Detection:
    """Everything the detector found in one photo.

    Attributes:
        faces: Usable faces, largest first.
        skipped: Detections that were dropped (too small), with the reason.
        source: File name of the photo for messages.
    """

    faces: tuple[DetectedFace, ...]
    skipped: tuple[SkippedFace, ...]
    source: str


def import_dlib() -> Any:
    """The ``dlib`` module (an optional dependency, imported on first use).

    Raises:
        ImportError: dlib is not installed (the message says how to install it).
    """
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"dlib is needed for face detection; {_INSTALL_HINT}") from exc
    return dlib


def dlib_models_dir() -> Path:
    """Returns the ``models/`` folder of the ``face-recognition-models`` package.

    Raises:
        WeightsError: If the package is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"The package face-recognition-models is not installed; {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not folder.is_dir():
        raise WeightsError(f"{folder} is missing; reinstall face-recognition-models ({_INSTALL_HINT})")
    return folder


def dlib_model_file(name: str) -> str:
    """Path of one of dlib's ``.dat`` model files in :func:`dlib_models_dir`.

    Raises:
        WeightsError: The package or the file is missing.
    """
    path = dlib_models_dir() / name
    if not path.is_file():
        raise WeightsError(f"dlib model {path} is missing; reinstall face-recognition-models ({_INSTALL_HINT})")
    return str(path)


@functools.lru_cache(maxsize=None)
def _hog_detector() -> Any:
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _cnn_detector() -> Any:
    return import_dlib().cnn_face_detection_model_v1(dlib_model_file("mmod_human_face_detector.dat"))


@functools.lru_cache(maxsize=None)
def _shape_predictor() -> Any:
    return import_dlib().shape_predictor(dlib_model_file("shape_predictor_68_face_landmarks.dat"))


def _downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = pixels.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return pixels, 1.0
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    return small, size[0] / w


def _c_order(pixels: np.ndarray) -> np.ndarray:
    """A fresh C-order uint8 copy: ``np.ascontiguousarray`` keeps the negative strides a rotated view
    has on size-1 axes, and dlib refuses those."""
    return np.array(pixels, dtype=np.uint8, order="C", copy=True)


def raw_detections(
    pixels: np.ndarray, detector: str, upsample: int
) -> list[tuple[tuple[float, float, float, float], float]]:
    """Every face box dlib's detector finds, unfiltered (no minimum size, no landmarks).

    Args:
        pixels: ``(H, W, 3)`` uint8 RGB.
        detector: ``"hog"`` or ``"cnn"``.
        upsample: Detector upsampling steps.

    Returns:
        ``[((left, top, right, bottom), score)]`` in pixel coordinates of ``pixels`` (right/bottom exclusive).
    """
    img = _c_order(pixels)
    out: list[tuple[tuple[float, float, float, float], float]] = []
    if detector == "hog":
        rects, scores, _ = _hog_detector().run(img, upsample, 0.0)
        for rect, score in zip(rects, scores):
            out.append(((rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1), float(score)))
    else:
        for det in _cnn_detector()(img, upsample):
            r = det.rect
            out.append(((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(det.confidence)))
    return out


def predict_landmarks(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Runs the 68-point shape predictor inside a box.

    Args:
        pixels: ``(H, W, 3)`` uint8 RGB.
        box: ``(left, top, right, bottom)`` in pixels (may extend past the image).

    Returns:
        ``(68, 2)`` float64 landmark positions (x, y).
    """
    dlib = import_dlib()
    left, top, right, bottom = (int(round(v)) for v in box)
    rect = dlib.rectangle(left, top, max(left, right - 1), max(top, bottom - 1))
    shape = _shape_predictor()(_c_order(pixels), rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def find_faces(
    photo: Photo,
    *,
    detector: Detector = "hog",
    upsample: int = 1,
    min_size: int = MIN_FACE_SIZE,
    max_side: int = DETECT_MAX_SIDE,
) -> Detection:
    """Detects all faces of a photo, with landmarks, and reports the ones it skipped.

    Args:
        photo: The photo.
        detector: ``"hog"`` (dlib frontal HOG+SVM, fast) or ``"cnn"`` (dlib mmod CNN, slower on
            CPU, finds more rotated and profile faces).
        upsample: Times the image is upsampled by 2 before detection (finds smaller faces).
        min_size: Faces whose box side (smaller of width and height) is below this many photo
            pixels are skipped with a reason.
        max_side: Long side the photo is downscaled to for the detector.

    Returns:
        A :class:`Detection` (possibly with no faces; this function never raises for that).
    """
    check_choice(detector, ("hog", "cnn"), "detector")
    if upsample < 0:
        raise ValueError(f"upsample must be >= 0, got {upsample}")
    small, scale = _downscale(photo.pixels, max_side)
    faces: list[tuple[tuple[float, float, float, float], float]] = []
    skipped: list[SkippedFace] = []
    for box, score in raw_detections(small, detector, upsample):
        box = tuple(v / scale for v in box)  # type: ignore[assignment]
        side = min(box[2] - box[0], box[3] - box[1])
        if side < min_size:
            reason = f"face box {side:.0f} px is smaller than min_size={min_size} px"
            logger.info("%s: skipped a face at %s: %s", photo.name, np.round(box).tolist(), reason)
            skipped.append(SkippedFace(box=box, score=score, reason=reason))
            continue
        faces.append((box, score))
    faces.sort(key=lambda bs: (bs[0][2] - bs[0][0]) * (bs[0][3] - bs[0][1]), reverse=True)
    result = tuple(
        DetectedFace(
            box=box,
            score=score,
            landmarks=predict_landmarks(photo.pixels, box),
            index=i,
            detector=detector,
        )
        for i, (box, score) in enumerate(faces)
    )
    return Detection(faces=result, skipped=tuple(skipped), source=photo.name)


def _not_found(photo: Photo, detection: Detection, detector: str) -> FaceNotFoundError:
    extra = ""
    if detection.skipped:
        reasons = "; ".join(s.reason for s in detection.skipped)
        extra = f" ({len(detection.skipped)} detection(s) skipped: {reasons})"
    return FaceNotFoundError(
        f"No usable face found in {photo.name} with detector={detector!r}{extra}. "
        "Try detector='cnn' or a higher upsample, use a larger or more frontal photo, "
        "or opt in to whole-image processing (dhr.faces.align.align_whole_image)."
    )


def detect_faces(
    photo: Photo,
    *,
    detector: Detector = "hog",
    upsample: int = 1,
    min_size: int = MIN_FACE_SIZE,
) -> list[DetectedFace]:
    """Detects all usable faces, largest first.

    Args:
        photo: The photo.
        detector: ``"hog"`` or ``"cnn"``.
        upsample: Detector upsampling steps.
        min_size: Minimum face box side in pixels (smaller ones are skipped and logged).

    Returns:
        The faces (at least one), each with ``(68, 2)`` landmarks.

    Raises:
        FaceNotFoundError: If no usable face is found (the message names the file).
    """
    detection = find_faces(photo, detector=detector, upsample=upsample, min_size=min_size)
    if not detection.faces:
        raise _not_found(photo, detection, detector)
    return list(detection.faces)


def detect_face(
    photo: Photo,
    *,
    index: int = 0,
    detector: Detector = "hog",
    upsample: int = 1,
    min_size: int = MIN_FACE_SIZE,
) -> DetectedFace:
    """Returns one face by size rank (0 = largest).

    Raises:
        FaceNotFoundError: If there is no usable face or fewer than ``index + 1``.
    """
    faces = detect_faces(photo, detector=detector, upsample=upsample, min_size=min_size)
    if not 0 <= index < len(faces):
        raise FaceNotFoundError(
            f"{photo.name} has {len(faces)} usable face(s); face index {index} does not exist "
            f"(choose 0..{len(faces) - 1})."
        )
    return faces[index]


def crop_landmarks(
    pixels: np.ndarray,
    *,
    fallback: Literal["none", "full_image"] = "none",
    detector: Detector = "hog",
    upsample: int = 1,
) -> DetectedFace | None:
    """Landmarks of the main face in an (aligned) crop.

    The crop is padded by 25% of its side with its edge colours so a face that fills it is still
    found by the detector (whose window needs context around the face).

    Args:
        pixels: ``(S, S, 3)`` uint8 crop (any H x W works).
        fallback: ``"full_image"``: when no face is found, predict the landmarks with the whole
            crop as the face box (``detector="full_image"`` in the result). ``"none"``: return None.
        detector: ``"hog"`` or ``"cnn"``.
        upsample: Detector upsampling steps.

    Returns:
        The largest face (coordinates in the crop), or None.
    """
    check_choice(fallback, ("none", "full_image"), "fallback")
    h, w = pixels.shape[:2]
    pad = int(round(0.25 * max(h, w)))
    padded = np.pad(np.asarray(pixels, dtype=np.uint8), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    small, scale = _downscale(padded, DETECT_MAX_SIDE)
    found = raw_detections(small, detector, upsample)
    if found:
        box, score = max(found, key=lambda bs: (bs[0][2] - bs[0][0]) * (bs[0][3] - bs[0][1]))
        box = tuple(v / scale - pad for v in box)  # type: ignore[assignment]
        return DetectedFace(
            box=box, score=score, landmarks=predict_landmarks(pixels, box), index=0, detector=detector
        )
    if fallback == "none":
        return None
    box = (0.0, 0.0, float(w), float(h))
    return DetectedFace(box=box, score=0.0, landmarks=predict_landmarks(pixels, box), index=0, detector="full_image")


RETRIES: tuple[str, ...] = ("contrast-normalised", "rotated 90°", "rotated 180°", "rotated 270°", "border padded")
"""What :func:`detect_faces_retrying` tries, in order, after the photo as it is."""


def _variant(photo: Photo, what: str) -> tuple[Photo, Any]:
    """A modified copy of ``photo`` for a retry and the map of its (x, y) points back to ``photo``."""
    import dataclasses

    px = photo.pixels
    H, W = px.shape[:2]
    if what == "contrast-normalised":
        from PIL import Image, ImageOps

        out = np.asarray(ImageOps.equalize(Image.fromarray(px)), dtype=np.uint8)
        back = lambda p: p  # noqa: E731
    elif what.startswith("rotated"):
        k = {"rotated 90°": 1, "rotated 180°": 2, "rotated 270°": 3}[what]
        out = np.ascontiguousarray(np.rot90(px, k))  # counter-clockwise

        def back(p: np.ndarray, k: int = k) -> np.ndarray:
            x, y = p[..., 0], p[..., 1]
            if k == 1:    # old (x, y) -> new (y, W-1-x)
                return np.stack([W - 1 - y, x], -1)
            if k == 2:    # old (x, y) -> new (W-1-x, H-1-y)
                return np.stack([W - 1 - x, H - 1 - y], -1)
            return np.stack([y, H - 1 - x], -1)  # k == 3: old (x, y) -> new (H-1-y, x)
    elif what == "border padded":
        pad = max(8, int(0.25 * max(H, W)))
        out = np.pad(px, ((pad, pad), (pad, pad), (0, 0)), mode="edge")

        def back(p: np.ndarray, pad: int = pad) -> np.ndarray:
            return p - pad
    else:
        raise ValueError(f"unknown retry {what!r}")
    return dataclasses.replace(photo, pixels=out, original_size=(out.shape[1], out.shape[0])), back


def _mapped(face: DetectedFace, back: Any) -> DetectedFace:
    import dataclasses

    left, top, right, bottom = face.box
    corners = back(np.array([[left, top], [right, top], [left, bottom], [right, bottom]], dtype=np.float64))
    box = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()),
           float(corners[:, 1].max()))
    return dataclasses.replace(face, box=box, landmarks=back(np.asarray(face.landmarks, dtype=np.float64)))


def detect_faces_retrying(
    photo: Photo,
    *,
    detector: Detector = "hog",
    upsample: int = 1,
    min_size: int = MIN_FACE_SIZE,
    retries: tuple[str, ...] = RETRIES,
) -> tuple[list[DetectedFace], tuple[str, ...]]:
    """Like :func:`detect_faces`, but before giving up tries a contrast-normalised copy (very dark or
    flat photos), the photo rotated by 90°, 180° and 270° (a sideways photo without EXIF
    orientation) and with an edge-replicated border (a face cut by the frame).

    The faces found on a modified copy are mapped back to ``photo``'s coordinates (box and
    landmarks), so alignment and paste-back work on the photo itself.

    Args:
        photo: The photo.
        detector, upsample, min_size: As for :func:`detect_faces`.
        retries: Which of :data:`RETRIES` to try, in order.

    Returns:
        ``(faces, tried)``: the faces (largest first) and the attempts made, ``("as is",)`` when
        the photo itself had a face; the last entry is the one that found them.

    Raises:
        FaceNotFoundError: None of the attempts found a usable face (the message lists them).
    """
    h, w = photo.pixels.shape[:2]
    if min(h, w) < min_size:
        raise FaceNotFoundError(
            f"{photo.name} is {w}×{h} px: too small to hold a usable face (faces under min_size={min_size} px "
            "are skipped); pass a larger photo, or whole_image=True (CLI: --whole-image) to process it as an "
            "aligned crop")
    try:
        return detect_faces(photo, detector=detector, upsample=upsample, min_size=min_size), ("as is",)
    except FaceNotFoundError as e:
        first = e
    tried = ["as is"]
    for what in retries:
        tried.append(what)
        variant, back = _variant(photo, what)
        detection = find_faces(variant, detector=detector, upsample=upsample, min_size=min_size)
        if detection.faces:
            faces = [_mapped(f, back) for f in detection.faces]
            logger.info("%s: face found only %s (tried: %s)", photo.name, what, ", ".join(tried))
            return faces, tuple(tried)
    raise FaceNotFoundError(f"{first} Tried: {', '.join(tried)}.") from None
