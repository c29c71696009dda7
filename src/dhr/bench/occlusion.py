"""Seeded synthetic occluders with exact masks, pasted onto aligned face crops.

The occlusion benchmark needs ground truth for DHR's out-of-domain segmentation: an occluder is
drawn with a hard-edged binary mask (no anti-aliasing, so the mask is exactly the set of pixels
that changed source) and pasted onto a held-out face. Everything is a pure function of the seed.

Occluder = shape x fill:

- shapes: ``ellipse``, ``rectangle`` (possibly rotated), ``polygon`` (random star-convex),
  ``hand`` (a palm ellipse with four or five finger capsules);
- fills: ``noise`` (coloured Gaussian noise), ``stripes`` (two colours, random angle and period),
  ``checker`` (two colours, random cell size) and ``object`` (a patch cut from *another* image, so
  the occluder carries natural texture; needs ``sources``).

The occluder covers between ``min_area`` and ``max_area`` of the image and is centred in the
middle band of the crop, so it overlaps the face (like a hand, a microphone or a sticker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from dhr.checks import check_choice
from dhr.errors import ConfigError, ShapeError

__all__ = ["FILLS", "SHAPES", "Occluded", "occlude", "occluder_fill", "occluder_mask"]

SHAPES: tuple[str, ...] = ("ellipse", "rectangle", "polygon", "hand")
FILLS: tuple[str, ...] = ("noise", "stripes", "checker", "object")


@dataclass(frozen=True)
class Occluded:
    """An occluded image with its ground truth.

    Attributes:
        image: ``(R, R, 3)`` uint8, the face with the occluder pasted in.
        mask: ``(R, R)`` bool, True where the occluder is (exactly the pasted pixels).
        shape: Occluder shape name.
        fill: Occluder fill name.
        seed: The seed it was drawn with.
        params: Drawn parameters (centre, size, angle, source index) for the record.
    """

    image: np.ndarray
    mask: np.ndarray
    shape: str
    fill: str
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Fraction of the image covered by the occluder."""
        return float(self.mask.mean())


def _rotate(points: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    p = points - np.asarray(centre)
    return p @ np.array([[c, s], [-s, c]]) + np.asarray(centre)


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    return _rotate(pts, angle, (cx, cy))


def _capsule_points(x0: float, y0: float, x1: float, y1: float, r: float, n: int = 12) -> np.ndarray:
    """Polygon of a stadium (segment (x0,y0)-(x1,y1) thickened by r)."""
    a = math.atan2(y1 - y0, x1 - x0)
    t1 = np.linspace(a + math.pi / 2, a + 3 * math.pi / 2, n)
    t2 = np.linspace(a - math.pi / 2, a + math.pi / 2, n)
    cap0 = np.stack([x0 + r * np.cos(t1), y0 + r * np.sin(t1)], 1)
    cap1 = np.stack([x1 + r * np.cos(t2), y1 + r * np.sin(t2)], 1)
    return np.concatenate([cap0, cap1])


def _draw(size: int, polygons: Sequence[np.ndarray]) -> np.ndarray:
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(canvas, dtype=bool).copy()


def occluder_mask(size: int, shape: str, rng: np.random.Generator, *, scale: float) -> tuple[np.ndarray, dict]:
    """Binary mask ``(size, size)`` of one occluder shape.

    Args:
        size: Image side R.
        shape: One of :data:`SHAPES`.
        rng: Random generator (all parameters are drawn from it).
        scale: Characteristic radius as a fraction of R.

    Returns:
        The mask and the drawn parameters.
    """
    check_choice(shape, SHAPES, "shape")
    R = float(size)
    cx = R * rng.uniform(0.3, 0.7)
    cy = R * rng.uniform(0.35, 0.8)
    angle = float(rng.uniform(0, math.pi))
    r = scale * R
    if shape == "ellipse":
        rx, ry = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.5, 1.0)
        polys = [_ellipse_points(cx, cy, rx, ry, angle)]
    elif shape == "rectangle":
        w, h = 2 * r * rng.uniform(0.7, 1.3), 2 * r * rng.uniform(0.4, 0.9)
        pts = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                        [cx - w / 2, cy + h / 2]])
        polys = [_rotate(pts, angle * 0.5, (cx, cy))]
    elif shape == "polygon":
        k = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = r * rng.uniform(0.6, 1.3, k)
        polys = [np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)]
    else:  # hand: palm + fingers spread around the palm's upper side
        palm_rx, palm_ry = r * 0.65, r * 0.75
        polys = [_ellipse_points(cx, cy, palm_rx, palm_ry, 0.0)]
        n_fingers = int(rng.integers(4, 6))
        base = -math.pi / 2 + angle - math.pi / 2  # fingers point "up" rotated by angle
        for i in range(n_fingers):
            a = base + (i - (n_fingers - 1) / 2) * 0.38
            length = r * rng.uniform(0.8, 1.3)
            x0, y0 = cx + palm_rx * 0.7 * math.cos(a), cy + palm_ry * 0.7 * math.sin(a)
            x1, y1 = x0 + length * math.cos(a), y0 + length * math.sin(a)
            polys.append(_capsule_points(x0, y0, x1, y1, r * rng.uniform(0.13, 0.2)))
    mask = _draw(size, polys)
    return mask, {"centre": [round(cx, 2), round(cy, 2)], "radius": round(r, 2), "angle": round(angle, 4)}


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def occluder_fill(size: int, fill: str, rng: np.random.Generator, *,
                  sources: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, dict]:
    """``(size, size, 3)`` uint8 texture of one fill.

    Args:
        size: Image side R.
        fill: One of :data:`FILLS`; ``object`` needs ``sources``.
        rng: Random generator.
        sources: ``(H, W, 3)`` uint8 images to cut ``object`` patches from (other images than the
            occluded one).

    Returns:
        The texture and its parameters.
    """
    check_choice(fill, FILLS, "fill")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if fill == "noise":
        base = _colour(rng)
        tex = base + rng.normal(0, rng.uniform(20, 60), (size, size, 3))
        params = {"base": [round(float(v), 1) for v in base]}
    elif fill in ("stripes", "checker"):
        c0, c1 = _colour(rng), _colour(rng)
        while np.abs(c0 - c1).sum() < 120:
            c1 = _colour(rng)
        period = max(2.0, size * rng.uniform(0.05, 0.15))
        if fill == "stripes":
            a = rng.uniform(0, math.pi)
            sel = (np.floor((xx * math.cos(a) + yy * math.sin(a)) / period) % 2).astype(bool)
            params = {"period": round(period, 2), "angle": round(float(a), 4)}
        else:
            sel = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(bool)
            params = {"period": round(period, 2)}
        tex = np.where(sel[..., None], c1, c0)
    else:
        if not sources:
            raise ConfigError("fill='object' needs other images to cut from (sources); pass sources=[...] "
                              "or choose another fill")
        k = int(rng.integers(len(sources)))
        src = np.asarray(sources[k])
        if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3:
            raise ShapeError(f"sources[{k}] must be (H, W, 3) uint8, got {src.shape} {src.dtype}")
        im = Image.fromarray(src)
        side = min(im.size)
        crop = int(side * rng.uniform(0.4, 0.8))
        x0 = int(rng.integers(0, im.size[0] - crop + 1))
        y0 = int(rng.integers(0, im.size[1] - crop + 1))
        patch = im.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.BILINEAR)
        tex = np.asarray(patch, dtype=np.float64)
        if rng.uniform() < 0.5:
            tex = tex[:, ::-1]
        params = {"source": k, "box": [x0, y0, crop]}
    return np.clip(np.round(tex), 0, 255).astype(np.uint8), params


def occlude(image: np.ndarray, seed: int, *, sources: Sequence[np.ndarray] = (), shape: str | None = None,
            fill: str | None = None, min_area: float = 0.05, max_area: float = 0.3,
            max_tries: int = 50) -> Occluded:
    """Pastes one seeded synthetic occluder onto a square face crop.

    Args:
        image: ``(R, R, 3)`` uint8 aligned face.
        seed: Seed; the same (image, seed, sources) gives the same result.
        sources: Other images for ``object`` fills (if empty, ``object`` is never drawn at random).
        shape: Force a shape (default: drawn from :data:`SHAPES`).
        fill: Force a fill (default: drawn from :data:`FILLS`).
        min_area: Smallest covered fraction of the image.
        max_area: Largest covered fraction.
        max_tries: Redraws of the geometry until the coverage lies in range.

    Returns:
        :class:`Occluded` with the composited image and the exact mask.

    Raises:
        ShapeError: ``image`` is not a square uint8 RGB array.
        ConfigError: Bad area bounds, unknown shape/fill, or no coverage in range after ``max_tries``.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
        raise ShapeError(f"image must be a square (R, R, 3) uint8 array, got {img.shape} {img.dtype}")
    if not 0 < min_area < max_area <= 1:
        raise ConfigError(f"need 0 < min_area < max_area <= 1, got {min_area}, {max_area}")
    size = img.shape[0]
    rng = np.random.default_rng(seed)
    fills = FILLS if sources else tuple(f for f in FILLS if f != "object")
    shape = str(rng.choice(SHAPES)) if shape is None else shape
    fill = str(rng.choice(fills)) if fill is None else fill
    check_choice(shape, SHAPES, "shape")
    check_choice(fill, FILLS, "fill")
    target_area = rng.uniform(min_area, max_area)
    scale = math.sqrt(target_area / math.pi)
    for _ in range(max_tries):
        mask, params = occluder_mask(size, shape, rng, scale=scale)
        cov = float(mask.mean())
        if min_area <= cov <= max_area:
            break
        # Rescale the radius towards the target area and redraw.
        scale *= math.sqrt(target_area / max(cov, 1e-4))
    else:
        raise ConfigError(f"could not draw a {shape} covering {min_area:.0%}-{max_area:.0%} of a {size}px image "
                          f"in {max_tries} tries; widen the area bounds")
    tex, fparams = occluder_fill(size, fill, rng, sources=sources)
    out = np.where(mask[..., None], tex, img)
    # A texture pixel equal to the face pixel would make the mask ambiguous; nudge it.
    same = mask & np.all(out == img, axis=-1)
    if same.any():
        out[same] = np.where(img[same] < 128, img[same] + 1, img[same] - 1)
    return Occluded(image=out.astype(np.uint8), mask=mask, shape=shape, fill=fill, seed=int(seed),
                    params={**params, **fparams, "coverage": round(cov, 4)})
