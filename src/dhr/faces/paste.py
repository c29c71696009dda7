"""Paste an edited face crop back into the full-resolution photo.

The crop is inverse-warped with the exact transform stored in :class:`AlignedFace` and blended
with a feathered mask: the face outline (jaw + brows raised to the forehead, convex hull of
``face_outline``) rasterised in crop space, clipped to the crop, eroded by ``feather`` pixels and
blurred with a Gaussian of radius ``feather`` (sigma = feather / 3, truncated at 3 sigma), so the
mask is exactly 0 outside the face outline and 1 well inside it. Pixels where the mask is 0 are
copied from the photo unchanged (bit-exact).

Two ways to blend (``mode``):

- ``"crop"``: the warped crop replaces the photo inside the mask,
  ``out = photo * (1 - m) + warp(edited) * m``. When the model's crop is smaller than the face in
  the photo, the face comes out as an upsampled (blurry) patch.
- ``"delta"``: only the change is pasted, ``out = photo + m * warp(edited - reference)``, where
  ``reference`` is the unedited inversion rendered the same way as the edit. Untouched detail
  (skin texture, hair, sharpness) stays the photo's own; with ``edited == reference`` the
  difference is exactly 0 and the photo comes back bit for bit.
- ``"auto"`` (default): ``delta`` when a reference is given and the model's crop is smaller than
  the face region in the photo (the face would be upsampled), else ``crop``
  (:func:`resolve_paste_mode`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from dhr.checks import check_choice
from dhr.errors import ConfigError, ShapeError
from dhr.faces.align import AlignedFace, sample_affine
from dhr.faces.detect import convex_hull, face_outline
from dhr.io.image import Photo

__all__ = ["PASTE_MODES", "PasteMode", "PasteResult", "face_blend_mask", "face_side_in_photo", "paste_back",
           "resolve_paste_mode", "seam_score"]

PasteMode = Literal["auto", "delta", "crop"]
PASTE_MODES: tuple[str, ...] = ("auto", "delta", "crop")


@dataclass(frozen=True)
class PasteResult:
    """Result of :func:`paste_back`.

    Attributes:
        image: ``(H, W, 3)`` uint8, the photo with the crop blended in (original size).
        mask: ``(H, W)`` float32 in [0, 1], the blend weight of the crop per photo pixel.
        crop_mask: ``(S, S)`` float32, the same mask in crop space.
        mode: The blend that was used, ``"delta"`` or ``"crop"`` (``"auto"`` resolved).
    """

    image: np.ndarray
    mask: np.ndarray
    crop_mask: np.ndarray
    mode: str = "crop"


def face_side_in_photo(aligned: AlignedFace) -> float:
    """Side, in photo pixels, of the square region the crop was taken from."""
    scale = math.sqrt(abs(float(np.linalg.det(aligned.matrix[:2, :2]))))  # crop px per photo px
    return aligned.size / scale


def resolve_paste_mode(mode: str, aligned: AlignedFace, *, model_size: int | None = None,
                       has_reference: bool = True) -> str:
    """Turns ``"auto"`` into ``"delta"`` or ``"crop"``.

    Args:
        mode: ``"auto"``, ``"delta"`` or ``"crop"``.
        aligned: The alignment (gives the face region's size in the photo).
        model_size: Side of the crop the model renders (default ``aligned.size``).
        has_reference: Whether an unedited reference crop is available (``delta`` needs one).

    Returns:
        ``"delta"`` when asked for, or for ``"auto"`` when a reference exists and ``model_size`` is
        smaller than the face region in the photo (the face is upsampled); ``"crop"`` otherwise.

    Raises:
        ConfigError: Unknown mode, or ``"delta"`` without a reference.
    """
    check_choice(mode, PASTE_MODES, "paste mode")
    if mode == "delta" and not has_reference:
        raise ConfigError("paste mode 'delta' needs the unedited reference crop (reference=...); "
                         "pass it, or use mode='crop'")
    if mode != "auto":
        return mode
    size = aligned.size if model_size is None else int(model_size)
    return "delta" if has_reference and size < face_side_in_photo(aligned) else "crop"


def face_blend_mask(aligned: AlignedFace, *, feather: float | None = None, forehead: float = 0.7) -> np.ndarray:
    """The feathered blend mask in crop space.

    Args:
        aligned: The aligned face (its landmarks; the whole crop when it has none).
        feather: Erosion and blur radius in crop pixels (default ``0.04 * S``).
        forehead: How far the brows are raised, in eye-to-mouth distances (see ``face_outline``).

    Returns:
        ``(S, S)`` float32 in [0, 1]; exactly 0 outside the face outline and near the crop border.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    size = aligned.size
    radius = float(feather) if feather is not None else 0.04 * size
    if radius < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    if aligned.landmarks is None:
        binary = np.ones((size, size), dtype=bool)
    else:
        hull = convex_hull(face_outline(aligned.landmarks, forehead=forehead))
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in hull], fill=1)
        binary = np.asarray(canvas, dtype=bool)
    if radius == 0:
        return binary.astype(np.float32)
    # Distance to the nearest outside pixel, counting the crop border as outside.
    dist = distance_transform_edt(np.pad(binary, 1))[1:-1, 1:-1]
    eroded = (dist > radius + 1.0).astype(np.float32)
    soft = gaussian_filter(eroded, sigma=radius / 3.0, truncate=3.0, mode="constant")
    soft[~binary] = 0.0
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def _crop_to_float(edited_crop: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Returns ``(3, S, S)`` float32 in [0, 255] without intermediate rounding."""
    if isinstance(edited_crop, torch.Tensor):
        t = edited_crop.detach().to("cpu", torch.float32)
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if tuple(t.shape) != (3, size, size):
            raise ShapeError(f"edited_crop must be (3, {size}, {size}) in [-1, 1], got {list(t.shape)}")
        return (t.clamp(-1.0, 1.0) + 1.0) * 127.5
    arr = np.asarray(edited_crop)
    if arr.shape != (size, size, 3) or arr.dtype != np.uint8:
        raise ShapeError(f"edited_crop must be ({size}, {size}, 3) uint8, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).to(torch.float32)


def paste_back(
    photo: Photo | np.ndarray,
    aligned: AlignedFace,
    edited_crop: np.ndarray | torch.Tensor,
    *,
    reference: np.ndarray | torch.Tensor | None = None,
    mode: str = "auto",
    model_size: int | None = None,
    feather: float | None = None,
    forehead: float = 0.7,
) -> PasteResult:
    """Warps an (edited) crop back into the photo and blends it with a feathered face mask.

    Args:
        photo: The original photo (a :class:`Photo` or ``(H, W, 3)`` uint8).
        aligned: The alignment the crop came from.
        edited_crop: ``(S, S, 3)`` uint8, or a ``(3, S, S)`` / ``(1, 3, S, S)`` tensor in [-1, 1].
        reference: The unedited inversion crop, same form as ``edited_crop``; needed by ``delta``.
        mode: ``"auto"``, ``"delta"`` or ``"crop"`` (see the module docstring).
        model_size: Side of the crop the model rendered before it was resized to S (decides
            ``"auto"``; default S).
        feather: Mask erosion/blur radius in crop pixels (default ``0.04 * S``).
        forehead: Forehead extension of the mask (eye-to-mouth distances).

    Returns:
        :class:`PasteResult` with the full-size image, the blend mask and the mode used.

    Raises:
        ShapeError: If the photo size or a crop shape does not match ``aligned``.
        ConfigError: Unknown mode, or ``"delta"`` without ``reference``.
    """
    pixels = photo.pixels if isinstance(photo, Photo) else np.asarray(photo)
    if pixels.shape[:2] != tuple(aligned.photo_size) or pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ShapeError(
            f"photo is {pixels.shape} {pixels.dtype} but the alignment was made on a "
            f"{aligned.photo_size} photo; paste into the photo the crop was aligned from."
        )
    size = aligned.size
    mode = resolve_paste_mode(mode, aligned, model_size=model_size, has_reference=reference is not None)
    crop = _crop_to_float(edited_crop, size)
    if mode == "delta":
        crop = crop - _crop_to_float(reference, size)  # exactly 0 where the edit changed nothing
    crop_mask = face_blend_mask(aligned, feather=feather, forehead=forehead)
    h, w = pixels.shape[:2]
    out = pixels.copy()
    full_mask = np.zeros((h, w), dtype=np.float32)

    corners = aligned.crop_to_photo(
        np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    )
    x0 = max(int(math.floor(corners[:, 0].min())), 0)
    y0 = max(int(math.floor(corners[:, 1].min())), 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + 1, w)
    y1 = min(int(math.ceil(corners[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return PasteResult(image=out, mask=full_mask, crop_mask=crop_mask, mode=mode)

    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    out_to_crop = aligned.matrix @ shift
    scale = math.sqrt(abs(np.linalg.det(aligned.matrix[:2, :2])))  # crop px per photo px
    k = 1 if scale <= 1.0 else min(4, int(math.ceil(scale)))
    stacked = torch.cat([crop, torch.from_numpy(crop_mask)[None]], dim=0)
    warped_img = sample_affine(stacked[:3], out_to_crop, (y1 - y0, x1 - x0), supersample=k, padding_mode="border")
    warped_mask = sample_affine(stacked[3:], out_to_crop, (y1 - y0, x1 - x0), supersample=k, padding_mode="zeros")
    m = warped_mask[0].clamp(0.0, 1.0).numpy()
    region = pixels[y0:y1, x0:x1].astype(np.float32)
    if mode == "delta":
        blended = region + warped_img.permute(1, 2, 0).numpy() * m[..., None]
    else:
        blended = region * (1.0 - m[..., None]) + warped_img.permute(1, 2, 0).numpy() * m[..., None]
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(m[..., None] > 0, blended, pixels[y0:y1, x0:x1])
    full_mask[y0:y1, x0:x1] = m
    return PasteResult(image=out, mask=full_mask, crop_mask=crop_mask, mode=mode)


def _ring_centres(mask: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` points spread evenly (by angle) along the 0.5 level of ``mask``."""
    from scipy.ndimage import binary_erosion

    inside = mask >= 0.5
    boundary = inside & ~binary_erosion(inside)
    ys, xs = np.nonzero(boundary)
    if len(xs) == 0:
        return np.zeros((0, 2), dtype=int)
    cy, cx = ys.mean(), xs.mean()
    order = np.argsort(np.arctan2(ys - cy, xs - cx))
    pick = order[np.linspace(0, len(order) - 1, num=min(count, len(order))).round().astype(int)]
    return np.stack([xs[pick], ys[pick]], axis=1)


def seam_score(
    original: np.ndarray,
    pasted: np.ndarray,
    mask: np.ndarray,
    lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    patch: int = 64,
    max_patches: int = 32,
) -> float:
    """Perceptual difference in a thin ring around the blend-mask border.

    Square patches of side ``patch`` centred on points of the mask's 0.5 contour (up to
    ``max_patches``, spread evenly around it) are compared with ``lpips_fn``.

    Args:
        original: ``(H, W, 3)`` uint8 photo before pasting.
        pasted: ``(H, W, 3)`` uint8 result of :func:`paste_back`.
        mask: ``(H, W)`` blend mask from :func:`paste_back`.
        lpips_fn: Callable ``(x, y) -> (B,)`` (or anything that flattens to B values) on
            ``(B, 3, p, p)`` tensors in [-1, 1], e.g. ``dhr.metrics.lpips.LPIPS``. None uses the
            mean absolute difference (L1 in [-1, 1] units) per patch.
        patch: Patch side in pixels (clipped to the photo size).
        max_patches: Most patches to compare.

    Returns:
        Mean score over the patches (0 for identical images).

    Raises:
        ShapeError: On mismatched shapes, or ValueError when the mask has no border.
    """
    if original.shape != pasted.shape or original.shape[:2] != mask.shape:
        raise ShapeError(f"shapes differ: original {original.shape}, pasted {pasted.shape}, mask {mask.shape}")
    h, w = mask.shape
    p = int(min(patch, h, w))
    centres = _ring_centres(mask, max_patches)
    if len(centres) == 0:
        raise ValueError("The mask has no border (nothing was pasted); cannot score a seam.")
    xs = np.clip(centres[:, 0] - p // 2, 0, w - p)
    ys = np.clip(centres[:, 1] - p // 2, 0, h - p)
    a = np.stack([original[y : y + p, x : x + p] for x, y in zip(xs, ys)])
    b = np.stack([pasted[y : y + p, x : x + p] for x, y in zip(xs, ys)])
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if lpips_fn is None:
        scores = (ta - tb).abs().flatten(1).mean(1)
    else:
        with torch.no_grad():
            scores = torch.as_tensor(lpips_fn(ta, tb)).reshape(len(ta), -1).mean(1)
    return float(scores.mean())
