"""Synthetic occluders for *training* the occluder network (:mod:`dhr.train.occluder`).

Deliberately not the benchmark's generator (:mod:`dhr.bench.occlusion`: hard-edged ellipses,
rectangles, star polygons and an ellipse-plus-capsules hand, filled with noise, straight stripes,
checkerboards or a patch of another face, always in the middle band). Training on that would make
the benchmark measure memorisation. This one draws what users bring, with other shapes, other fills
and soft edges, anywhere in the crop:

- shapes: ``glasses`` (two lens frames, a bridge and temples; dark lenses for sunglasses),
  ``hat`` (crown and brim over the top of the crop), ``hand`` (a palm polygon and bent finger
  strokes entering from an edge), ``blob`` (thresholded smooth noise), ``strokes`` (thick random
  curves: cables, hair strands, straps), ``mask`` (a face mask / scarf over the lower face) and
  ``rod`` (a microphone: a stick with a head);
- fills: ``solid`` (one colour with a shading gradient and grain), ``skin`` (skin tones with
  shading, the hard case for hands), ``photo`` (a rotated, rescaled, colour-shifted patch of another
  training photo), ``waves`` (sums of random sinusoids, thresholded or smooth), ``smooth`` (coloured
  multi-octave value noise);
- edges anti-aliased (drawn at 4x, reduced), sometimes feathered, opacity 0.85-1.

The label is the occluder's coverage > 0.5. A fraction of the samples has no occluder, so the
network also learns to leave clean faces alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dhr.errors import ShapeError

__all__ = ["TRAIN_SHAPES", "TRAIN_FILLS", "Synthetic", "synthetic_occluder"]

TRAIN_SHAPES: tuple[str, ...] = ("glasses", "hat", "hand", "blob", "strokes", "mask", "rod")
TRAIN_FILLS: tuple[str, ...] = ("solid", "skin", "photo", "waves", "smooth")
_SS = 4  # supersampling factor of the shape drawings


@dataclass(frozen=True)
class Synthetic:
    """One training sample.

    Attributes:
        image: ``(R, R, 3)`` uint8 composite.
        mask: ``(R, R)`` bool label (occluder coverage > 0.5); all False without occluder.
        shapes: Names of the shapes drawn (empty without occluder).
    """

    image: np.ndarray
    mask: np.ndarray
    shapes: tuple[str, ...]


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    s = size * _SS
    im = Image.new("L", (s, s), 0)
    return im, ImageDraw.Draw(im), s


def _reduce(im: Image.Image, size: int) -> np.ndarray:
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0


def _curve(rng: np.random.Generator, start: np.ndarray, angle: float, length: float, n: int = 6,
           bend: float = 0.35) -> list[tuple[float, float]]:
    pts, p, a = [], start.astype(float), angle
    for _ in range(n + 1):
        pts.append((float(p[0]), float(p[1])))
        a += rng.normal(0, bend)
        p = p + length / n * np.array([math.cos(a), math.sin(a)])
    return pts


def _thick(draw: ImageDraw.ImageDraw, pts: Sequence[tuple[float, float]], width: float) -> None:
    w = max(1, int(round(width)))
    draw.line(pts, fill=255, width=w, joint="curve")
    r = w / 2
    for x, y in (pts[0], pts[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)


def _shape(name: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Coverage ``(R, R)`` in [0, 1] of one shape, and an optional ``(R, R)`` shading multiplier."""
    im, d, s = _canvas(size)
    shade = None
    if name == "glasses":
        cy = s * rng.uniform(0.33, 0.52)
        cx = s * rng.uniform(0.42, 0.58)
        half = s * rng.uniform(0.17, 0.26)          # centre of each lens from the middle
        rw, rh = s * rng.uniform(0.09, 0.15), s * rng.uniform(0.06, 0.11)
        frame = s * rng.uniform(0.015, 0.05)
        dark = rng.random() < 0.4
        round_lens = rng.random() < 0.5
        for sx in (-1, 1):
            box = [cx + sx * half - rw, cy - rh, cx + sx * half + rw, cy + rh]
            if round_lens:
                d.ellipse(box, fill=255 if dark else None, outline=255, width=max(1, int(frame)))
            else:
                d.rounded_rectangle(box, radius=rh * 0.5, fill=255 if dark else None, outline=255,
                                    width=max(1, int(frame)))
        d.line([(cx - half + rw, cy - rh * 0.3), (cx + half - rw, cy - rh * 0.3)], fill=255, width=max(1, int(frame)))
        if rng.random() < 0.7:  # temples towards the ears
            for sx in (-1, 1):
                x0 = cx + sx * (half + rw)
                d.line([(x0, cy - rh * 0.5), (x0 + sx * s * rng.uniform(0.05, 0.2), cy - rh * rng.uniform(0.2, 1.0))],
                       fill=255, width=max(1, int(frame)))
        im = im.rotate(rng.normal(0, 6), resample=Image.Resampling.BILINEAR, center=(cx, cy))
    elif name == "hat":
        brim_y = s * rng.uniform(0.12, 0.38)
        cx = s * rng.uniform(0.35, 0.65)
        crown_w = s * rng.uniform(0.3, 0.55)
        top = brim_y - s * rng.uniform(0.15, 0.45)
        if rng.random() < 0.5:
            d.ellipse([cx - crown_w, top, cx + crown_w, brim_y + (brim_y - top)], fill=255)
        else:
            d.polygon([(cx - crown_w, brim_y), (cx - crown_w * 0.8, top), (cx + crown_w * 0.8, top),
                       (cx + crown_w, brim_y)], fill=255)
        brim_w, brim_h = crown_w * rng.uniform(1.1, 1.9), s * rng.uniform(0.03, 0.08)
        d.ellipse([cx - brim_w, brim_y - brim_h, cx + brim_w, brim_y + brim_h], fill=255)
        im = im.rotate(rng.normal(0, 8), resample=Image.Resampling.BILINEAR, center=(cx, brim_y))
        # Mask out what lies below the brim's band so the hat does not become a face-sized ellipse.
        cut = Image.new("L", (s, s), 0)
        ImageDraw.Draw(cut).rectangle([0, 0, s, brim_y + 2 * brim_h], fill=255)
        im = Image.fromarray(np.minimum(np.asarray(im), np.asarray(cut)))
        y = np.linspace(0, 1, size)[:, None]
        shade = np.broadcast_to(1.0 - 0.35 * rng.random() * y, (size, size)).copy()
    elif name == "hand":
        side = rng.integers(0, 4)  # enters from the bottom, left, right or top
        base_angle = (-math.pi / 2, 0.0, math.pi, math.pi / 2)[side] + rng.normal(0, 0.35)
        edge = {0: (rng.uniform(0.2, 0.8), 1.05), 1: (-0.05, rng.uniform(0.3, 0.9)),
                2: (1.05, rng.uniform(0.3, 0.9)), 3: (rng.uniform(0.2, 0.8), -0.05)}[side]
        start = np.array(edge) * s
        reach = s * rng.uniform(0.3, 0.6)
        direction = np.array([math.cos(base_angle), math.sin(base_angle)])
        palm_c = start + direction * reach * 0.55
        normal = np.array([-direction[1], direction[0]])
        pw = s * rng.uniform(0.1, 0.17)
        wrist = s * rng.uniform(0.08, 0.13)
        poly = [start + normal * wrist, palm_c + normal * pw + direction * pw * 0.4,
                palm_c - normal * pw + direction * pw * 0.4, start - normal * wrist]
        d.polygon([tuple(p) for p in poly], fill=255)
        d.ellipse([palm_c[0] - pw, palm_c[1] - pw, palm_c[0] + pw, palm_c[1] + pw], fill=255)
        nf = int(rng.integers(2, 6))
        fw = pw * rng.uniform(0.35, 0.5)
        for k in range(nf):
            off = (k - (nf - 1) / 2) / max(nf - 1, 1) * 1.5 * pw
            root = palm_c + normal * off + direction * pw * 0.6
            ang = base_angle + rng.normal(0, 0.25) + off / pw * 0.2
            _thick(d, _curve(rng, root, ang, pw * rng.uniform(0.8, 1.6), n=3, bend=0.25), fw)
        y = np.linspace(-1, 1, size)
        g = np.add.outer(y * rng.normal(0, 0.3), y * rng.normal(0, 0.3))
        shade = 1.0 + g
    elif name == "blob":
        n = int(rng.integers(3, 7))
        field = rng.normal(size=(n, n))
        up = np.asarray(Image.fromarray(field.astype(np.float32), mode="F").resize((s, s), Image.Resampling.BICUBIC))
        cx, cy = rng.uniform(0.15, 0.85, 2)
        yy, xx = np.mgrid[0:s, 0:s] / s
        r = rng.uniform(0.12, 0.3)
        level = up - ((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2 * 1.5
        im = Image.fromarray(((level > 0) * 255).astype(np.uint8))
    elif name == "strokes":
        for _ in range(int(rng.integers(1, 4))):
            start = rng.uniform(0, 1, 2) * s
            _thick(d, _curve(rng, start, rng.uniform(0, 2 * math.pi), s * rng.uniform(0.3, 0.9), n=8, bend=0.3),
                   s * rng.uniform(0.02, 0.07))
    elif name == "mask":
        top = s * rng.uniform(0.55, 0.72)
        cx = s * rng.uniform(0.42, 0.58)
        w = s * rng.uniform(0.25, 0.4)
        bottom = s * rng.uniform(0.85, 1.1)
        d.polygon([(cx - w, top + s * 0.04), (cx, top - s * 0.03), (cx + w, top + s * 0.04),
                   (cx + w * 0.8, bottom), (cx - w * 0.8, bottom)], fill=255)
        if rng.random() < 0.6:  # ear loops
            for sx in (-1, 1):
                d.line([(cx + sx * w, top + s * 0.05), (cx + sx * (w + s * 0.08), top - s * 0.1)], fill=255,
                       width=max(1, int(s * 0.012)))
        y = np.linspace(0, 1, size)[:, None]
        shade = np.broadcast_to(1.0 - 0.2 * y * rng.random(), (size, size)).copy()
    elif name == "rod":
        start = np.array([rng.uniform(0.1, 0.9), 1.05]) * s
        ang = -math.pi / 2 + rng.normal(0, 0.5)
        length = s * rng.uniform(0.3, 0.6)
        end = start + length * np.array([math.cos(ang), math.sin(ang)])
        _thick(d, [tuple(start), tuple(end)], s * rng.uniform(0.03, 0.07))
        r = s * rng.uniform(0.05, 0.1)
        d.ellipse([end[0] - r, end[1] - r * 1.3, end[0] + r, end[1] + r * 1.3], fill=255)
    else:
        raise ShapeError(f"unknown training shape {name!r}; choose one of {list(TRAIN_SHAPES)}")
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(radius=_SS * rng.uniform(0.3, 0.9)))
    return _reduce(im, size), shade


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros((size, size))
    for o in range(octaves):
        n = 2 ** (o + 2)
        g = rng.normal(size=(n, n)).astype(np.float32)
        out += np.asarray(Image.fromarray(g, mode="F").resize((size, size), Image.Resampling.BICUBIC)) / (o + 1)
    return out / (np.abs(out).max() + 1e-8)


def _fill(name: str, rng: np.random.Generator, size: int, sources: Sequence[np.ndarray]) -> np.ndarray:
    """``(R, R, 3)`` float RGB in [0, 255] of one fill."""
    if name == "solid":
        col = rng.uniform(0, 255, 3)
        out = np.broadcast_to(col, (size, size, 3)).astype(np.float64)
    elif name == "skin":
        base = np.array([rng.uniform(120, 245), rng.uniform(80, 200), rng.uniform(60, 170)])
        base[1] = min(base[1], base[0] - 10)
        base[2] = min(base[2], base[1])
        out = np.broadcast_to(base, (size, size, 3)).astype(np.float64) * rng.uniform(0.5, 1.1)
        out = out * (1 + 0.08 * _value_noise(rng, size, 2))[..., None]
    elif name == "photo":
        src = sources[int(rng.integers(0, len(sources)))]
        zoom = rng.uniform(1.0, 3.0)
        patch = Image.fromarray(src).rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR,
                                            expand=False)
        crop = int(round(size / zoom))
        x0, y0 = rng.integers(0, size - crop + 1, 2)
        patch = patch.crop((int(x0), int(y0), int(x0) + crop, int(y0) + crop)).resize((size, size),
                                                                                   Image.Resampling.BILINEAR)
        out = np.asarray(patch, dtype=np.float64)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        out = out * rng.uniform(0.6, 1.3, 3) + rng.uniform(-30, 30, 3)
    elif name == "waves":
        yy, xx = np.mgrid[0:size, 0:size] / size
        v = np.zeros((size, size))
        for _ in range(int(rng.integers(1, 4))):
            a = rng.uniform(0, math.pi)
            f = rng.uniform(2, 14)
            v += np.sin(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)) + 3 * _value_noise(rng, size, 1)
                        + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            v = (v > 0).astype(np.float64) * 2 - 1
        c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (v / (np.abs(v).max() + 1e-8) + 1) / 2
        out = c1 * t[..., None] + c2 * (1 - t[..., None])
    elif name == "smooth":
        out = np.stack([_value_noise(rng, size, int(rng.integers(2, 5))) for _ in range(3)], -1)
        out = 127.5 + out * rng.uniform(40, 127, 3) + rng.uniform(-60, 60, 3)
    else:
        raise ShapeError(f"unknown training fill {name!r}; choose one of {list(TRAIN_FILLS)}")
    grain = rng.uniform(0, 8)
    return np.clip(out + rng.normal(0, grain, out.shape), 0, 255)


def synthetic_occluder(face: np.ndarray, rng: np.random.Generator, *, sources: Sequence[np.ndarray] = (),
                       p_clean: float = 0.2, max_occluders: int = 2) -> Synthetic:
    """Draws 0..``max_occluders`` training occluders onto ``face``.

    Args:
        face: ``(R, R, 3)`` uint8 aligned crop.
        rng: The random generator (the sample is a pure function of its state).
        sources: Other ``(R, R, 3)`` uint8 crops for the ``photo`` fill (without them ``photo`` is not drawn).
        p_clean: Probability of a sample without occluder.
        max_occluders: Most occluders per sample.

    Returns:
        A :class:`Synthetic` sample.

    Raises:
        ShapeError: If ``face`` is not a square ``(R, R, 3)`` uint8 array.
    """
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1] or face.dtype != np.uint8:
        raise ShapeError(f"face must be a square (R, R, 3) uint8 crop, got {face.shape} {face.dtype}")
    size = face.shape[0]
    out = face.astype(np.float64)
    label = np.zeros((size, size), dtype=bool)
    names: list[str] = []
    if rng.random() >= p_clean:
        fills = [f for f in TRAIN_FILLS if f != "photo" or len(sources) > 0]
        for _ in range(int(rng.integers(1, max_occluders + 1))):
            shape = TRAIN_SHAPES[int(rng.integers(0, len(TRAIN_SHAPES)))]
            cover, shade = _shape(shape, rng, size)
            if cover.max() < 0.5:
                continue
            fill = "skin" if shape == "hand" and rng.random() < 0.6 else fills[int(rng.integers(0, len(fills)))]
            colour = _fill(fill, rng, size, sources)
            if shade is not None:
                colour = np.clip(colour * shade[..., None], 0, 255)
            alpha = cover * rng.uniform(0.85, 1.0)
            out = out * (1 - alpha[..., None]) + colour * alpha[..., None]
            label |= cover > 0.5
            names.append(shape)
    return Synthetic(image=np.clip(np.round(out), 0, 255).astype(np.uint8), mask=label, shapes=tuple(names))
