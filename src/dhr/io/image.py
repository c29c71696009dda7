"""Decoding and encoding of photos, and the one place where uint8 pixels meet float tensors.

``load_image`` turns any file PIL can read into an upright RGB uint8 array (EXIF orientation
applied) and records everything that was changed on the way in ``Photo.notes``. ``save_image``
writes pixels back with the source photo's EXIF (orientation reset to 1, since the pixels are
already upright) and ICC profile.

Tensor convention: float ``(3, H, W)`` (or ``(B, 3, H, W)``) in [-1, 1], ``x = p / 127.5 - 1``
for a uint8 value p; the inverse rounds to the nearest integer (it never truncates).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

from dhr.errors import ImageError, ShapeError

__all__ = ["DEFAULT_MAX_PIXELS", "Photo", "load_image", "save_image", "uint8_to_tensor", "tensor_to_uint8"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height) unless ``max_pixels`` says otherwise (50 MP)."""

_ORIENTATION_TAG = 0x0112

Source = Union[str, Path, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class Photo:
    """A decoded photo, upright and in RGB.

    Attributes:
        pixels: ``(H, W, 3)`` uint8 RGB, EXIF orientation already applied.
        original_size: ``(width, height)`` as stored in the file, before the EXIF rotation.
        path: The file it came from, or None for bytes.
        sha256: Hex sha256 of the file's bytes (a content key for caches).
        exif: EXIF block with the orientation tag reset to 1 (or None if the file had none).
        icc_profile: Embedded ICC profile bytes, or None (dropped when the colour mode was
            converted, since it no longer describes the pixels).
        notes: What the loader changed, e.g. ``"converted from CMYK"``.
    """

    pixels: np.ndarray
    original_size: tuple[int, int]
    path: Path | None = None
    sha256: str = ""
    exif: bytes | None = None
    icc_profile: bytes | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def height(self) -> int:
        """Height of the upright pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width of the upright pixels."""
        return int(self.pixels.shape[1])

    @property
    def name(self) -> str:
        """File name for messages (``<bytes>`` when loaded from memory)."""
        return str(self.path) if self.path is not None else "<bytes>"

    def to_tensor(self) -> torch.Tensor:
        """Returns the pixels as float32 ``(3, H, W)`` in [-1, 1]."""
        return uint8_to_tensor(self.pixels)


def _read_source(source: Source) -> tuple[bytes, Path | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    path = Path(source)
    if not path.exists():
        raise ImageError(f"Image file {path} does not exist; check the path.")
    if not path.is_file():
        raise ImageError(f"{path} is not a file; pass the path of an image file (JPEG, PNG, WebP, ...).")
    try:
        return path.read_bytes(), path
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc}. Check the file permissions.") from exc


def _to_rgb(im: Image.Image, notes: list[str]) -> tuple[Image.Image, bool]:
    """Converts any PIL mode to RGB. Returns the image and whether an ICC profile still applies."""
    mode = im.mode
    if mode == "RGB":
        return im, True
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        notes.append("converted from palette")
        mode = im.mode
        if mode == "RGB":
            return im, True
    if mode in ("RGBA", "LA", "RGBa", "La"):
        keep_icc = mode in ("RGBA", "RGBa")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        notes.append(f"alpha channel ({mode}) composited on white")
        return im, keep_icc
    if mode == "CMYK":
        notes.append("converted from CMYK")
        return _cmyk_to_rgb(im, notes), False
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
        elif mode.startswith("I;16") or float(arr.max(initial=0.0)) > 255.0:
            peak = 65535.0
        else:
            peak = 255.0
        arr8 = np.clip(np.rint(np.nan_to_num(arr) * (255.0 / peak)), 0, 255).astype(np.uint8)
        notes.append(f"converted from {mode} grayscale (peak {peak:g}) to 8-bit")
        return Image.fromarray(arr8, "L").convert("RGB"), False
    if mode in ("L", "1"):
        notes.append("converted from grayscale" if mode == "L" else "converted from 1-bit")
        return im.convert("RGB"), False
    try:
        out = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"Unsupported colour mode {mode!r}; re-save the image as RGB JPEG or PNG.") from exc
    notes.append(f"converted from {mode}")
    return out, False


def _cmyk_to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            if out is not None:
                notes.append("CMYK converted to sRGB with the embedded ICC profile")
                return out
        except (ImportError, OSError, ValueError) as exc:  # ImageCms.PyCMSError subclasses these
            logger.warning("ICC conversion of CMYK image failed (%s); using a naive conversion", exc)
    return im.convert("RGB")


def load_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Reads a photo from a path or bytes into an upright RGB uint8 array.

    EXIF orientation is applied (``ImageOps.exif_transpose``). Grayscale, 1-bit, palette,
    CMYK (through its ICC profile when present), 16-bit and float images are converted to
    8-bit RGB; alpha is composited on white. Every such change is listed in ``Photo.notes``.

    Args:
        source: A file path, or the file's bytes.
        max_pixels: Refuse images with more than this many pixels (width x height), checked
            before decoding.

    Returns:
        The :class:`Photo`.

    Raises:
        ImageError: If the file is missing, not an image, corrupt or truncated, or too large.
    """
    if max_pixels <= 0:
        raise ImageError(f"max_pixels must be positive, got {max_pixels}")
    data, path = _read_source(source)
    name = str(path) if path is not None else "<bytes>"
    digest = hashlib.sha256(data).hexdigest()
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{name} is too large for the decoder ({exc}); downscale it below {max_pixels:,} pixels."
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                f"{name} is not a readable image ({exc}); pass a JPEG, PNG, WebP, TIFF or BMP file."
            ) from exc
        width, height = im.size
        if width * height > max_pixels:
            raise ImageError(
                f"{name} has {width}x{height} = {width * height:,} pixels, more than max_pixels="
                f"{max_pixels:,}; downscale the photo or raise max_pixels."
            )
        if width == 0 or height == 0:
            raise ImageError(f"{name} is empty ({width}x{height}); pass a real image.")
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large for the decoder ({exc}); downscale it.") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(
                f"{name} is corrupt or truncated ({exc}); re-export or re-download the file."
            ) from exc

    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"used the first of {im.n_frames} frames")
    icc_profile = im.info.get("icc_profile") or None
    exif_obj = im.getexif()
    orientation = exif_obj.get(_ORIENTATION_TAG, 1)
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
        notes.append(f"rotated upright by EXIF orientation {orientation}")
    exif_bytes: bytes | None = None
    if len(exif_obj):
        if _ORIENTATION_TAG in exif_obj:
            exif_obj[_ORIENTATION_TAG] = 1
        exif_bytes = exif_obj.tobytes()

    im, keep_icc = _to_rgb(im, notes)
    if not keep_icc and icc_profile is not None:
        # A CMYK or grayscale profile does not describe the RGB pixels any more.
        icc_profile = None
        notes.append("dropped the ICC profile of the original colour mode")
    pixels = np.array(im, dtype=np.uint8, copy=True)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(f"{name} decoded to shape {pixels.shape}, expected (H, W, 3); re-save it as RGB.")
    pixels.setflags(write=False)
    for note in notes:
        logger.info("%s: %s", name, note)
    return Photo(
        pixels=pixels,
        original_size=(int(width), int(height)),
        path=path,
        sha256=digest,
        exif=exif_bytes,
        icc_profile=icc_profile,
        notes=tuple(notes),
    )


def save_image(
    path: str | Path,
    image: np.ndarray | torch.Tensor | Photo,
    *,
    like: Photo | None = None,
    quality: int = 95,
) -> Path:
    """Writes an RGB image, keeping the source photo's EXIF (orientation 1) and ICC profile.

    Args:
        path: Output file; the format follows the suffix (``.jpg``, ``.png``, ``.webp``, ...).
        image: ``(H, W, 3)`` uint8, a ``(3, H, W)`` float tensor in [-1, 1], or a :class:`Photo`.
        like: Photo whose EXIF and ICC profile to copy (defaults to ``image`` if it is a Photo).
        quality: JPEG/WebP quality.

    Returns:
        The path written.

    Raises:
        ImageError: If the pixels have the wrong shape/dtype or the file cannot be written.
    """
    path = Path(path)
    if isinstance(image, Photo):
        like = like if like is not None else image
        pixels = image.pixels
    elif isinstance(image, torch.Tensor):
        pixels = tensor_to_uint8(image)
    else:
        pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(
            f"save_image needs (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}; "
            "convert tensors with tensor_to_uint8."
        )
    kwargs: dict[str, object] = {}
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".webp"):
        kwargs["quality"] = quality
    if like is not None:
        if like.exif:
            exif = Image.Exif()
            exif.load(like.exif)
            if _ORIENTATION_TAG in exif:
                exif[_ORIENTATION_TAG] = 1
            kwargs["exif"] = exif.tobytes()
        if like.icc_profile:
            kwargs["icc_profile"] = like.icc_profile
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageError(f"Cannot write {path}: {exc}. Check the folder and the file suffix.") from exc
    return path


def uint8_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Converts uint8 RGB to a float32 tensor in [-1, 1].

    Args:
        pixels: ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8.

    Returns:
        ``(3, H, W)`` or ``(B, 3, H, W)`` float32, ``p / 127.5 - 1``.

    Raises:
        ShapeError: If the array is not uint8 with 3 channels last.
    """
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ShapeError(f"pixels must be uint8 (H, W, 3) or (B, H, W, 3), got {arr.shape} {arr.dtype}")
    t = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).to(torch.float32)
    t = t.permute(2, 0, 1) if arr.ndim == 3 else t.permute(0, 3, 1, 2)
    return (t / 127.5 - 1.0).contiguous()


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """Converts a float tensor in [-1, 1] to uint8 RGB, clamping and rounding to nearest.

    Args:
        x: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [-1, 1] (values outside are clamped).

    Returns:
        ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8.

    Raises:
        ShapeError: If the tensor does not have 3 channels in dim -3.
    """
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or x.shape[-3] != 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"x must be a (3, H, W) or (B, 3, H, W) tensor, got {shape}")
    y = ((x.detach().to(torch.float64).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    y = y.permute(1, 2, 0) if x.ndim == 3 else y.permute(0, 2, 3, 1)
    return np.ascontiguousarray(y.cpu().numpy())
