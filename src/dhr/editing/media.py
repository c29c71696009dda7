"""Media outputs for edits: labelled sweep grids, side-by-side sheets, GIF and MP4 animations.

All functions take images as ``uint8`` numpy arrays of shape ``(H, W, 3)`` (RGB). Converting
generator output (``[-1, 1]`` tensors) to that form is the caller's job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dhr.errors import ConfigError, ImageError
from dhr.outputs import atomic_path

__all__ = ["ANIMATION_FPS", "ANIMATION_LONG_SIDE", "ANIMATION_MIN_FRAMES", "animation_frames", "animation_strengths",
           "contact_sheet", "fit_long_side", "mask_overlay", "save_gif", "save_mp4", "save_png",
           "sweep_animation_frames", "sweep_grid"]

logger = logging.getLogger(__name__)

_BG = (255, 255, 255)
_FG = (0, 0, 0)

ANIMATION_LONG_SIDE = 512
"""Long side in pixels of sweep GIF/MP4 frames (the photo, or the crop, resized to it)."""
ANIMATION_MIN_FRAMES = 32
"""Frames of one ping-pong loop of a sweep animation, at least (4 s at :data:`ANIMATION_FPS`)."""
ANIMATION_FPS = 8.0
OOD_COLOUR = (230, 40, 40)
"""Tint of out-of-domain pixels in :func:`mask_overlay`."""


def _check_image(img: object, name: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} array of shape {list(img.shape)}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ImageError(f"{name} must be a uint8 array of shape (H, W, 3), got {desc}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageError(f"{name} is empty: shape {list(img.shape)}")
    return img


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: object) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _paste_center(canvas: Image.Image, img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    h, w = img.shape[:2]
    canvas.paste(Image.fromarray(img), (x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2))


def sweep_grid(images: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, *, pad: int = 4, font_size: int = 14) -> np.ndarray:
    """Lays out a strength sweep as a labelled grid (rows: images or directions; columns: strengths).

    Args:
        images: ``rows x cols`` nested list of ``uint8 (H, W, 3)`` images (sizes may differ; each
            cell is centred in a cell as large as the largest image).
        row_labels: One label per row drawn at the left, or None.
        col_labels: One label per column drawn on top (e.g. ``"-2"``, ``"0"``, ``"+2"``), or None.
        pad: Gap between cells in pixels.
        font_size: Label text size in pixels.

    Returns:
        ``uint8 (H', W', 3)`` grid on a white background.

    Raises:
        ImageError: If an image is not ``uint8 (H, W, 3)``.
        ConfigError: If the grid is empty, ragged, or a label count does not match.
    """
    rows = [list(r) for r in images]
    if not rows or not rows[0]:
        raise ConfigError("sweep_grid needs at least one row with one image")
    ncol = len(rows[0])
    if any(len(r) != ncol for r in rows):
        raise ConfigError(f"sweep_grid rows must have the same length, got {[len(r) for r in rows]}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ConfigError(f"{len(row_labels)} row labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) != ncol:
        raise ConfigError(f"{len(col_labels)} column labels for {ncol} columns")
    if pad < 0 or font_size < 1:
        raise ConfigError(f"pad={pad} must be >= 0 and font_size={font_size} >= 1")
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            _check_image(img, f"images[{i}][{j}]")
    cell_h = max(img.shape[0] for r in rows for img in r)
    cell_w = max(img.shape[1] for r in rows for img in r)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 0
    if row_labels is not None:
        left = max(_text_size(probe, str(t), font)[0] for t in row_labels) + 2 * pad
    top = 0
    if col_labels is not None:
        top = max(_text_size(probe, str(t), font)[1] for t in col_labels) + 2 * pad
    width = left + ncol * cell_w + (ncol + 1) * pad
    height = top + len(rows) * cell_h + (len(rows) + 1) * pad
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for j in range(ncol):
        x0 = left + pad + j * (cell_w + pad)
        if col_labels is not None:
            tw, _ = _text_size(draw, str(col_labels[j]), font)
            draw.text((x0 + (cell_w - tw) // 2, pad), str(col_labels[j]), fill=_FG, font=font)
        for i, r in enumerate(rows):
            y0 = top + pad + i * (cell_h + pad)
            _paste_center(canvas, r[j], (x0, y0, x0 + cell_w, y0 + cell_h))
    if row_labels is not None:
        for i, label in enumerate(row_labels):
            _, th = _text_size(draw, str(label), font)
            y0 = top + pad + i * (cell_h + pad)
            draw.text((pad, y0 + (cell_h - th) // 2), str(label), fill=_FG, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def contact_sheet(columns: Mapping[str, np.ndarray], *, pad: int = 4, font_size: int = 14) -> np.ndarray:
    """Side-by-side sheet of titled images (e.g. ``{"input": a, "inversion": b, "smile +2": c}``).

    Args:
        columns: Title -> ``uint8 (H, W, 3)`` image, in display order.
        pad: Gap in pixels.
        font_size: Title text size in pixels.

    Returns:
        ``uint8 (H', W', 3)`` sheet with the titles above the images.
    """
    if not columns:
        raise ConfigError("contact_sheet needs at least one column")
    titles = list(columns)
    return sweep_grid([[columns[t] for t in titles]], None, titles, pad=pad, font_size=font_size)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Writes a ``uint8 (H, W, 3)`` image as PNG (parent folders created). Returns the path."""
    img = _check_image(image, "image")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = list(frames)
    if not frames:
        raise ConfigError("an animation needs at least one frame")
    for i, f in enumerate(frames):
        _check_image(f, f"frames[{i}]")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ImageError(f"all frames must have the same size, got {sorted(shapes)}")
    return frames


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 100:
        raise ConfigError(f"fps={fps!r} must be a number in (0, 100]")
    return float(fps)


def _pingpong(frames: list[np.ndarray]) -> list[np.ndarray]:
    """``a b c d`` -> ``a b c d c b`` (loops back without repeating the end frames)."""
    return frames + frames[-2:0:-1]


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0, *, pingpong: bool = False,
             loop: int = 0) -> Path:
    """Writes an animated GIF.

    Args:
        frames: ``uint8 (H, W, 3)`` frames of one size.
        path: Output file (parent folders created).
        fps: Frames per second (GIF stores delays in 10 ms steps).
        pingpong: Play forwards then backwards (``a b c`` -> ``a b c b``).
        loop: Number of loops; 0 = forever.

    Returns:
        The path. Note: GIF writers merge identical consecutive frames into one longer frame.
    """
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    if pingpong:
        frames = _pingpong(frames)
    path = Path(path)
    # Fast octree quantisation: Pillow's default (median cut) takes ~1 s per 512 px frame.
    pil = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
           for f in frames]
    with atomic_path(path) as tmp:
        pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:], duration=round(1000 / fps),
                    loop=int(loop), optimize=False, disposal=1)
    return path


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 24.0, *, pingpong: bool = False,
             quality: int = 8) -> Path:
    """Writes an H.264 MP4 (yuv420p) with imageio-ffmpeg.

    Frames with an odd width or height are padded by one pixel (edge replicated) because yuv420p
    needs even dimensions.

    Args:
        frames: ``uint8 (H, W, 3)`` frames of one size.
        path: Output ``.mp4`` file (parent folders created).
        fps: Frames per second.
        pingpong: Play forwards then backwards.
        quality: imageio-ffmpeg quality, 0 (worst) .. 10 (best).

    Returns:
        The path.

    Raises:
        ConfigError: If imageio-ffmpeg is missing (install hint), or on bad arguments.
    """
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise ConfigError(
            "save_mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or pip install 'dhr[video]')"
        ) from e
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    if not 0 <= int(quality) <= 10:
        raise ConfigError(f"quality={quality} must be between 0 and 10")
    if pingpong:
        frames = _pingpong(frames)
    h, w = frames[0].shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        logger.info("padding %dx%d frames to even size %dx%d for yuv420p", w, h, w + pw, h + ph)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w + pw, h + ph), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=int(quality), macro_block_size=1, ffmpeg_log_level="error",
        )
        writer.send(None)  # start the generator
        try:
            for f in frames:
                if ph or pw:
                    f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
                writer.send(np.ascontiguousarray(f))
        finally:
            writer.close()
    return path


def mask_overlay(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """The image with its out-of-domain pixels tinted :data:`OOD_COLOUR` and outlined.

    Shown instead of a bare mask: an all-white (all in-domain) mask gives the image itself instead
    of a white square that looks empty on a white page.

    Args:
        image: ``uint8 (H, W, 3)``.
        mask: ``(H, W)`` (or ``(H, W, 1)``) in-domain mask, white = in-domain: ``uint8`` 0..255 or float in
            [0, 1]; resized (nearest) to the image when its size differs.
        alpha: Opacity of the tint in (0, 1].

    Returns:
        ``uint8 (H, W, 3)``.
    """
    img = _check_image(image, "image")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ImageError(f"mask must be (H, W), got shape {list(m.shape)}")
    if not 0 < alpha <= 1:
        raise ConfigError(f"alpha={alpha} must be in (0, 1]")
    m = m.astype(np.float32) / (255.0 if m.dtype == np.uint8 else 1.0)
    if m.shape != img.shape[:2]:
        m = np.asarray(Image.fromarray((m * 255).round().astype(np.uint8)).resize(
            (img.shape[1], img.shape[0]), Image.NEAREST), np.float32) / 255.0
    ood = (1.0 - m.clip(0, 1))[..., None] * alpha
    out = img.astype(np.float32) * (1.0 - ood) + np.asarray(OOD_COLOUR, np.float32) * ood
    hard = m < 0.5
    edge = np.zeros_like(hard)
    edge[1:, :] |= hard[1:, :] != hard[:-1, :]
    edge[:-1, :] |= hard[1:, :] != hard[:-1, :]
    edge[:, 1:] |= hard[:, 1:] != hard[:, :-1]
    edge[:, :-1] |= hard[:, 1:] != hard[:, :-1]
    out[edge & hard] = OOD_COLOUR
    return out.round().clip(0, 255).astype(np.uint8)


def animation_strengths(strengths: Sequence[float], min_frames: int = ANIMATION_MIN_FRAMES) -> tuple[float, ...]:
    """Evenly spaced strengths from the sweep's first to its last, enough for a ping-pong loop of
    at least ``min_frames`` frames (``n`` strengths play as ``2n - 2`` frames).

    A one-strength sweep stays one strength (a still image).
    """
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ConfigError("a sweep animation needs at least one strength")
    if len(strengths) == 1 or strengths[0] == strengths[-1]:
        return (strengths[0],)
    n = max(len(strengths), min_frames // 2 + 1)
    lo, hi = strengths[0], strengths[-1]
    return tuple(round(lo + (hi - lo) * i / (n - 1), 10) for i in range(n))


def fit_long_side(image: np.ndarray, long_side: int = ANIMATION_LONG_SIDE) -> np.ndarray:
    """Resizes ``uint8 (H, W, 3)`` so that its longer side is ``long_side`` (Lanczos; even sizes for MP4)."""
    img = _check_image(image, "image")
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    size = (max(2, 2 * round(w * scale / 2)), max(2, 2 * round(h * scale / 2)))
    if size == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS), dtype=np.uint8)


def animation_frames(frames: Sequence[np.ndarray], strengths: Sequence[float], name: str, *,
                     long_side: int = ANIMATION_LONG_SIDE, font_size: int = 18) -> list[np.ndarray]:
    """Frames resized to ``long_side`` with the strength written in a corner (``"age +1.5"``).

    Args:
        frames: ``uint8 (H, W, 3)`` frames, one per strength.
        strengths: The strength of each frame.
        name: Direction name for the label.
        long_side: See :func:`fit_long_side`.
        font_size: Label size in pixels.

    Returns:
        The labelled frames, all ``uint8`` of one size.
    """
    frames = _check_frames(frames)
    if len(frames) != len(strengths):
        raise ConfigError(f"{len(frames)} frames but {len(strengths)} strengths")
    font = _font(font_size)
    out = []
    for f, s in zip(frames, strengths):
        canvas = Image.fromarray(fit_long_side(f, long_side))
        draw = ImageDraw.Draw(canvas)
        text = f"{name} {float(s):+.2f}"
        tw, th = _text_size(draw, text, font)
        draw.rectangle((0, 0, tw + 10, th + 10), fill=_BG)
        draw.text((5, 3), text, fill=_FG, font=font)
        out.append(np.asarray(canvas, dtype=np.uint8).copy())
    return out


def sweep_animation_frames(pipe, inv, name: str, strengths: Sequence[float]) -> list[np.ndarray]:
    """Frames of a watchable sweep animation: the edit pasted into the photo (the crop when the photo
    is not available), long side :data:`ANIMATION_LONG_SIDE`, from the sweep's first to its last
    strength in enough steps for a ping-pong loop of :data:`ANIMATION_MIN_FRAMES` frames (4 s at
    :data:`ANIMATION_FPS`), the strength written on each frame.

    Save with ``save_gif(frames, path, fps=ANIMATION_FPS, pingpong=True)`` (and :func:`save_mp4`).

    Args:
        pipe: The :class:`dhr.pipeline.Pipeline`.
        inv: The :class:`dhr.pipeline.PhotoInversion`.
        name: Direction name.
        strengths: The sweep's strengths.

    Returns:
        ``uint8 (H, W, 3)`` frames, one per strength of :func:`animation_strengths`.
    """
    paste = inv.photo is not None and inv.aligned is not None
    res = pipe.sweep(inv, name, animation_strengths(strengths), paste=paste)
    return animation_frames(res.frames, res.strengths, name)
