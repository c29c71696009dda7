"""Attribute labels from dlib's 68 landmarks: ``smile``, ``yaw`` and ``eyes_open``.

The training crops carry no labels for these attributes, but the 68-point landmarks give them for
free. All three scores are measured in a face frame: the x axis runs along the eye line (from the
image-left eye centre to the image-right one), the y axis points down the face, and lengths are
in inter-ocular distances (iod, the distance of the two eye centres), so they do not depend on the
crop size, the position or the in-plane roll of the face.

- ``smile`` = mouth width (corners 48-54) / iod + mouth-corner lift / iod, where the lift is how far
  the corners sit above the lip centre (the mean of the outer-lip mid points 51 and 57) along the
  face's y axis. A wider mouth and raised corners both score higher.
- ``yaw`` = offset of the nose tip (30) from the eye midpoint along the eye line / iod. Positive when
  the nose points to the image right (the subject turned to their left).
- ``eyes_open`` = eye aspect ratio (Soukupova & Cech 2016), mean of both eyes:
  ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)`` with p1..p6 = 36..41 and 42..47. About 0.3 for an
  open eye, near 0 for a closed one.

:func:`label_images` runs the shape predictor on crops upsampled to ``size`` px (256 by default),
inside the box of dlib's HOG detector, or a fixed box (the median detected box) when the detector
finds no face. :func:`training_labels` labels the training crops of a data folder (never the
held-out ones) and caches the result as an ``.npz``.

Landmark layout: see :mod:`dhr.faces.detect` (right eye 36-41, left eye 42-47, outer lips 48-59).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dhr.errors import ConfigError, ShapeError

__all__ = ["LANDMARK_ATTRIBUTES", "LandmarkLabels", "label_images", "landmark_scores", "training_labels"]

log = logging.getLogger(__name__)

LANDMARK_ATTRIBUTES: tuple[str, ...] = ("smile", "yaw", "eyes_open")
"""Names of the labels :func:`landmark_scores` returns, in order."""

_CACHE_VERSION = 1


def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eye midpoint ``(N, 2)``, unit x axis ``(N, 2)``, unit y axis ``(N, 2)`` and iod ``(N,)``."""
    eye_l = lm[:, 36:42].mean(1)  # image-left eye
    eye_r = lm[:, 42:48].mean(1)
    axis = eye_r - eye_l
    iod = np.linalg.norm(axis, axis=1)
    x = axis / np.maximum(iod, 1e-12)[:, None]
    y = np.stack([-x[:, 1], x[:, 0]], axis=1)  # x rotated by +90 degrees: points down the face
    return (eye_l + eye_r) / 2, x, y, iod


def _ear(eye: np.ndarray) -> np.ndarray:
    """Eye aspect ratio of ``(N, 6, 2)`` eye contours."""
    d = lambda a, b: np.linalg.norm(eye[:, a] - eye[:, b], axis=1)  # noqa: E731
    return (d(1, 5) + d(2, 4)) / np.maximum(2.0 * d(0, 3), 1e-12)


def landmark_scores(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The three landmark labels of one face or a batch.

    Args:
        landmarks: ``(68, 2)`` or ``(N, 68, 2)`` landmark positions (x, y) in pixels.

    Returns:
        ``{"smile", "yaw", "eyes_open"}`` -> ``(N,)`` float64 (``()``-shaped for one face); see
        the module docstring for the definitions. Scale-, shift- and roll-invariant.

    Raises:
        ShapeError: If the array is not ``(68, 2)`` / ``(N, 68, 2)`` or the eyes coincide.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    single = lm.ndim == 2
    if single:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ShapeError(f"landmarks must be (68, 2) or (N, 68, 2), got {tuple(np.shape(landmarks))}")
    mid, x, y, iod = _face_frame(lm)
    if bool((iod <= 1e-9).any()):
        raise ShapeError("landmarks with coincident eye centres: inter-ocular distance is 0")
    proj_x = lambda p: ((p - mid) * x).sum(-1)  # noqa: E731
    proj_y = lambda p: ((p - mid) * y).sum(-1)  # noqa: E731
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1) / iod
    lip_centre = (lm[:, 51] + lm[:, 57]) / 2
    corners = (lm[:, 48] + lm[:, 54]) / 2
    lift = (proj_y(lip_centre) - proj_y(corners)) / iod  # y points down: corners above centre -> > 0
    out = {
        "smile": width + lift,
        "yaw": proj_x(lm[:, 30]) / iod,
        "eyes_open": (_ear(lm[:, 36:42]) + _ear(lm[:, 42:48])) / 2,
    }
    return {k: (v[0] if single else v) for k, v in out.items()}


def _upsample(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return np.ascontiguousarray(img)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class LandmarkLabels:
    """Landmark labels of a batch of crops.

    Attributes:
        scores: name -> ``(N,)`` float64 (see :func:`landmark_scores`).
        landmarks: ``(N, 68, 2)`` float32 landmarks in pixels of the ``size`` x ``size`` upsampled crop.
        detected: ``(N,)`` bool, True where dlib's detector found the face (else the fixed box was used).
        size: Side the crops were upsampled to before the shape predictor ran.
    """

    scores: dict[str, np.ndarray]
    landmarks: np.ndarray
    detected: np.ndarray
    size: int


def label_images(images: np.ndarray, *, size: int = 256, fallback_box: tuple[float, float, float, float] | None = None,
                 log_every: int = 1000) -> LandmarkLabels:
    """Landmarks and labels of square crops.

    Each crop is upsampled (bicubic) to ``size`` px; dlib's HOG detector (no upsampling) gives the
    face box, and when it finds none the shape predictor runs in ``fallback_box``.

    Args:
        images: ``(N, S, S, 3)`` uint8 crops (e.g. the model's training crops or its samples).
        size: Side in pixels the shape predictor sees (dlib's 68-point model wants faces of
            roughly 100 px and more; 64 px crops are upsampled 4x).
        fallback_box: ``(left, top, right, bottom)`` in ``size`` px for crops without a
            detection; default the median of this batch's detected boxes (the whole crop when
            nothing was detected at all).
        log_every: Log progress every this many crops (0: never).

    Returns:
        :class:`LandmarkLabels`.

    Raises:
        ShapeError: If ``images`` is not ``(N, S, S, 3)`` uint8.
        ImportError / WeightsError: Without dlib or its model files (``pip install 'dhr[faces]'``).
    """
    from dhr.faces.detect import predict_landmarks, raw_detections

    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2] or arr.dtype != np.uint8:
        raise ShapeError(f"images must be (N, S, S, 3) uint8, got {arr.shape} {arr.dtype}")
    if size < 64:
        raise ConfigError(f"size={size} is too small for dlib's shape predictor; use 200-256")
    n = len(arr)
    boxes: list[tuple[float, float, float, float] | None] = []
    ups: list[np.ndarray] = []
    lms = np.zeros((n, 68, 2), dtype=np.float32)
    detected = np.zeros(n, dtype=bool)
    for i, img in enumerate(arr):
        up = _upsample(img, size)
        found = raw_detections(up, "hog", 0)
        if found:
            box = max(found, key=lambda bs: (bs[0][2] - bs[0][0]) * (bs[0][3] - bs[0][1]))[0]
            lms[i] = predict_landmarks(up, box)
            detected[i] = True
            boxes.append(box)
        else:
            boxes.append(None)
            ups.append(up)  # kept until the fallback box is known
        if log_every and (i + 1) % log_every == 0:
            log.info("landmark labels: %d / %d crops (%d detected)", i + 1, n, int(detected[: i + 1].sum()))
    if fallback_box is None:
        got = np.array([b for b in boxes if b is not None], dtype=np.float64)
        fallback_box = tuple(np.median(got, axis=0).tolist()) if len(got) else (0.0, 0.0, float(size), float(size))
    missing = iter(ups)
    for i in np.nonzero(~detected)[0]:
        lms[i] = predict_landmarks(next(missing), fallback_box)
    scores = landmark_scores(lms) if n else {k: np.zeros(0) for k in LANDMARK_ATTRIBUTES}
    return LandmarkLabels(scores=scores, landmarks=lms, detected=detected, size=size)


def _names_key(names: tuple[str, ...], size: int, resolution: int) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION}:{size}:{resolution}:".encode())
    for n in names:
        h.update(n.encode() + b"\0")
    return h.hexdigest()


def training_labels(data: str | Path, resolution: int, cache: str | Path | None = None, *, size: int = 256,
                    data_cache: str | Path | None = None,
                    val_fraction: float = 0.04) -> tuple[np.ndarray, LandmarkLabels]:
    """Landmark labels of the TRAINING crops of a data folder (held-out crops excluded).

    The crops are those :func:`dhr.train.data.prepare_dataset` gives at ``resolution`` (what the
    generator and the encoder were trained on), split with the same ``val_fraction``.

    Args:
        data: The data folder (e.g. ``../shared/datasets/utkface``).
        resolution: The model resolution (crops are prepared at this size, then upsampled).
        cache: ``.npz`` file for the labels (reused when it holds the same crop names, ``resolution`` and ``size``;
            labelling ~9k crops takes several minutes).
        size: Side the shape predictor sees.
        data_cache: ``prepare_dataset``'s own cache (e.g. a training run's ``data_64.npz``).
        val_fraction: The held-out fraction the model was trained with.

    Returns:
        ``(images (N, R, R, 3) uint8, labels)`` of the training crops, in dataset order.
    """
    from dhr.train.data import prepare_dataset

    train, _, _ = prepare_dataset(data, resolution, data_cache, val_fraction=val_fraction)
    key = _names_key(train.names, size, resolution)
    cache = Path(cache) if cache else None
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            scores = {k: z[f"score_{k}"] for k in LANDMARK_ATTRIBUTES}
            log.info("landmark labels of %d training crops from %s", len(train), cache)
            return train.images, LandmarkLabels(scores, z["landmarks"], z["detected"], int(z["size"]))
        log.warning("%s was made for other crops or settings; relabelling", cache)
    labels = label_images(train.images, size=size)
    log.info("landmark labels: %d training crops, detector found %d", len(train), int(labels.detected.sum()))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, key=np.array(key), size=np.array(size), landmarks=labels.landmarks, detected=labels.detected,
                 names=np.array(train.names), **{f"score_{k}": v for k, v in labels.scores.items()})
        tmp.replace(cache)
    return train.images, labels


def main(argv: list[str] | None = None) -> None:
    """``python -m dhr.train.landmark_labels DATA CACHE.npz [--resolution 64]``: label and cache."""
    import argparse

    p = argparse.ArgumentParser(description="Landmark labels (smile, yaw, eyes_open) of the training crops.")
    p.add_argument("data", type=Path)
    p.add_argument("cache", type=Path)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--data-cache", type=Path, default=None)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _, labels = training_labels(a.data, a.resolution, a.cache, size=a.size, data_cache=a.data_cache)
    for k, v in labels.scores.items():
        print(f"{k}: mean {v.mean():.4f} std {v.std():.4f} (n={len(v)})")
    print(f"detected: {int(labels.detected.sum())} / {len(labels.detected)}")


if __name__ == "__main__":
    main()
