"""A pipeline result as a bundle: the alignment record it saves, and its re-hydration on load.

:func:`alignment_record` is what :class:`dhr.Pipeline` writes into ``Inversion.meta["alignment"]``
(photo -> crop matrix, landmarks, crop size, source photo path and sha256); :func:`load_photo_bundle`
reads a bundle back into a :class:`~dhr.results.PhotoInversion`: the :class:`AlignedFace` from that
record, the source photo when it is given or still on disk with the recorded sha256, and, for
bundles made without their crop, the target re-cropped from that photo.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dhr.bundle.store import bundle_paths, load_bundle
from dhr.errors import CheckpointError, ImageError
from dhr.faces.align import AlignedFace, warp_to_crop
from dhr.io.image import Photo, as_photo, load_image, resize_square, tensor_to_uint8, uint8_to_tensor
from dhr.results import PhotoInversion

__all__ = ["alignment_record", "load_photo_bundle"]

logger = logging.getLogger(__name__)


def alignment_record(aligned: AlignedFace, photo: Photo | None) -> dict[str, Any]:
    """The JSON-ready record of an alignment and its source photo (``meta["alignment"]``).

    Args:
        aligned: The aligned face.
        photo: Its photo, or None (inverted from a bare crop).

    Returns:
        ``matrix`` (3x3 photo -> crop), ``landmarks`` (crop pixels) or None, ``source_box``,
        ``face_index``, ``template_name``, ``photo_size`` (H, W), ``crop_size`` S, ``whole_image``,
        ``source``, ``photo_path`` (resolved) and ``photo_sha256`` (None without a photo), ``notes``.
    """
    return {
        "matrix": np.asarray(aligned.matrix, dtype=float).tolist(),
        "landmarks": None if aligned.landmarks is None else np.asarray(aligned.landmarks, dtype=float).tolist(),
        "source_box": None if aligned.source_box is None else [float(v) for v in aligned.source_box],
        "face_index": int(aligned.face_index),
        "template_name": aligned.template_name,
        "photo_size": [int(v) for v in aligned.photo_size],
        "crop_size": int(aligned.size),
        "whole_image": bool(aligned.whole_image),
        "source": aligned.source,
        "photo_path": None if photo is None or photo.path is None else str(Path(photo.path).resolve()),
        "photo_sha256": None if photo is None else photo.sha256,
        "notes": list(aligned.notes),
    }


def _aligned_from_record(record: dict[str, Any], target: torch.Tensor) -> AlignedFace:
    """The :class:`AlignedFace` of an :func:`alignment_record`, its crop resized from ``target`` ``(3, R, R)``."""
    matrix = np.asarray(record["matrix"], dtype=np.float64)
    size = int(record.get("crop_size") or target.shape[-1])
    return AlignedFace(
        crop=tensor_to_uint8(resize_square(target.detach().cpu().float(), size)),
        matrix=matrix,
        inverse=np.linalg.inv(matrix),
        landmarks=None if record.get("landmarks") is None else np.asarray(record["landmarks"], dtype=np.float64),
        source_box=None if record.get("source_box") is None else tuple(record["source_box"]),
        face_index=int(record.get("face_index", 0)),
        template_name=str(record.get("template_name", "")),
        photo_size=tuple(record.get("photo_size", (size, size))),
        whole_image=bool(record.get("whole_image", False)),
        source=str(record.get("source", "")),
    )


def _source_photo(record: dict[str, Any], given: Any, stem: str, notes: list[str]) -> Photo | None:
    """The verified source photo: ``given`` (must match the recorded sha256) or the recorded file
    when it is still there and unchanged; otherwise None, with the reason appended to ``notes``."""
    recorded = record.get("photo_sha256")
    if given is not None:
        photo = as_photo(given)
        if recorded not in (None, photo.sha256):
            raise ImageError(f"{stem}: the given photo is not the one this bundle was made from "
                             f"(sha256 {photo.sha256[:12]}..., recorded {recorded[:12]}...)")
        return photo
    ppath = record.get("photo_path")
    if not ppath:
        return None
    if not Path(ppath).is_file():
        notes.append(f"source photo {ppath} not found; pasting unavailable")
        return None
    try:
        candidate = load_image(ppath)
    except ImageError as e:
        notes.append(f"source photo {ppath} unreadable ({e}); pasting unavailable")
        return None
    if recorded in (None, candidate.sha256):
        return candidate
    notes.append(f"source photo {ppath} changed since the inversion; pasting unavailable")
    return None


def load_photo_bundle(path: str | Path, *, generator: torch.nn.Module, device: torch.device | str,
                      resolution: int, photo: Any = None) -> PhotoInversion:
    """Loads a bundle saved from a pipeline result, re-rendering its reconstruction.

    The source photo (needed to paste) is ``photo`` when given, else the recorded file when it is
    still there; either way its sha256 must equal the recorded one. Otherwise the result's
    ``photo`` is None, pasting is unavailable and ``notes`` says why.

    Args:
        path: The bundle stem (or either of its files).
        generator: The generator the inversion was made with (its sha256 is checked).
        device: Where to put the tensors.
        resolution: The generator's resolution R (a rebuilt target is resized to it).
        photo: The source photo when its file has moved: the same file (path or bytes), as the
            recorded sha256 is that of the file.

    Returns:
        The :class:`~dhr.results.PhotoInversion`, its ``stem`` the bundle's file stem.

    Raises:
        CheckpointError: Missing/corrupt bundle, one made with another generator, or one without its
            target crop whose source photo is not available.
        ImageError: ``photo`` is not the photo the bundle was made from (sha256 differs).
    """
    inv = load_bundle(path, model=generator, device=device, require_target=False)
    stem = bundle_paths(path)[0].name.removesuffix(".safetensors")
    record = inv.meta.get("alignment")
    notes = list(inv.meta.get("notes", []) or [])
    aligned = source = None
    if isinstance(record, dict) and record.get("matrix") is not None:
        aligned = _aligned_from_record(record, inv.target)
        source = _source_photo(record, photo, stem, notes)
    if not inv.meta.get("target_stored", True):
        # An older bundle without its crop: re-crop it from the verified source photo.
        if source is None or aligned is None:
            raise CheckpointError(f"{stem}: the bundle stores no target crop (made by an older dhr) and its "
                                  "source photo is not available; pass photo=<the photo file> to rebuild it")
        crop = warp_to_crop(source.pixels, aligned.matrix, aligned.size)
        aligned = dataclasses.replace(aligned, crop=crop)
        inv = dataclasses.replace(inv, target=resize_square(uint8_to_tensor(crop), resolution).to(inv.image))
        notes.append("target crop rebuilt from the source photo (bundle without one)")
    for n in notes:
        logger.info("%s: %s", stem, n)
    return PhotoInversion(inversion=inv, aligned=aligned, photo=source, stem=stem, notes=tuple(notes),
                          timings=dict(inv.meta.get("timings", {}) or {}))
