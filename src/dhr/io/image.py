"""Decoding and encoding of photos, and the one place where uint8 pixels meet float tensors.

``load_image`` turns any file PIL can read into an upright RGB uint8 array (EXIF orientation
applied) and records everything that was changed on the way in ``Photo.notes``. ``save_image``
writes pixels back with the source photo's EXIF (orientation reset to 1, since the pixels are
already upright) and ICC profile.

Tensor convention: float ``(3, H, W)`` (or ``(B, 3, H, W)``) in [-1, 1], ``x = p / 127.5 - 1``
for a uint8 value p; the inverse rounds to the nearest integer (it never truncates).

Size: about 500 lines, kept in one module because every decoding guard (formats allowed by content,
pixel limits, truncation, colour modes, EXIF) sits on the one path a file takes from disk to pixels.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dhr.errors import ImageError, ShapeError
from dhr.outputs import atomic_path

__all__ = ["ALLOWED_FORMATS", "DEFAULT_MAX_FILE_BYTES", "DEFAULT_MAX_PIXELS", "Photo", "as_photo", "load_image",
           "load_mask_array", "resize_square", "save_image", "to_pil", "uint8_to_tensor", "tensor_to_uint8"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height) unless ``max_pixels`` says otherwise (50 MP)."""

DEFAULT_MAX_FILE_BYTES = 1 << 30
"""Largest accepted image file (1 GiB), checked before the file is read."""

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "JPEG2000")
"""The only Pillow decoders ever run on an input (by content, whatever the file name says); GIF and
multi-frame TIFF give their first frame, JPEG includes multi-picture (MPO) phone photos. Never
EPS/PS/PDF (Ghostscript) or any other plugin. Decoders missing from this Pillow build are left out."""
_ALLOWED_TEXT = "JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) or JPEG 2000"

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


def _read_source(source: Source, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[bytes, Path | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise ImageError(f"the image data has {len(source):,} bytes, more than {max_bytes:,}; downscale it.")
        return bytes(source), None
    path = Path(source)
    try:
        st = path.stat()  # follows links; never opens the file
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path} is a symbolic link loop; point it at an image file.") from None
        if path.is_symlink():
            raise ImageError(f"{path} is a dangling link (its target is missing); fix the link.") from None
        if isinstance(exc, FileNotFoundError):
            raise ImageError(f"Image file {path} not found (it does not exist); check the path.") from None
        raise ImageError(f"Cannot read {path}: {exc.strerror or exc}. Check the file permissions.") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise ImageError(f"{path} is {kind}, not a file; pass the path of an image file (JPEG, PNG, WebP, ...). "
                         "It was not opened.")
    if st.st_size > max_bytes:
        raise ImageError(f"{path} has {st.st_size:,} bytes, more than the {max_bytes:,} accepted for a photo; "
                         "downscale or re-compress it.")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc.strerror or exc}. Check the file permissions.") from exc
    if len(data) > max_bytes:  # it grew since stat
        raise ImageError(f"{path} has more than {max_bytes:,} bytes; downscale or re-compress it.")
    return data, path


_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "PDF"),
    (b"%!PS", 0, "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"8BPS", 0, "Photoshop PSD"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "XML/SVG"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"DDS ", 0, "DDS"),
)


def _available_formats() -> list[str]:
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _sniff(data: bytes) -> str | None:
    """A name for a known non-raster or unsupported format from the first bytes, else None."""
    head = data[:64].lstrip()
    for sig, off, name in _SIGNATURES:
        if data[off:off + len(sig)] == sig or (off == 0 and head.startswith(sig)):
            return name
    return None


def _open_allowed(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Opens ``data`` with Pillow's decoders for :data:`ALLOWED_FORMATS` only and checks the size.

    Identification is by content: no other decoder (EPS/Ghostscript, PDF, ...) is ever tried.
    """
    if not data:
        raise ImageError(f"{name} is an empty file (0 bytes); re-export or re-download it.")
    try:
        im = Image.open(io.BytesIO(data), formats=_available_formats())
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{name} is too large for the decoder ({exc}); downscale it below {max_pixels:,} pixels."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = _sniff(data)
        if kind is not None:
            raise ImageError(f"{name}: unsupported format ({kind}); dhr decodes only {_ALLOWED_TEXT}. "
                             "Convert it to PNG or JPEG.") from None
        why = "no decoder recognises its content" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        raise ImageError(
            f"{name} is not a readable image ({why}); unsupported or unknown format: pass a "
            f"{_ALLOWED_TEXT} file."
        ) from None
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
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageError(
            f"{name} is corrupt or truncated ({exc}); re-export or re-download the file."
        ) from exc
    return im


def load_mask_array(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> np.ndarray:
    """Reads a mask image (any allowed format) as float32 ``(H, W)`` in [0, 1] (its luminance).

    The same limits as :func:`load_image` apply (file size before reading, pixels before
    decoding, allowed formats by content).

    Raises:
        ImageError: Missing, unsupported, too large or corrupt file.
    """
    data, path = _read_source(source, max_bytes)
    name = f"mask {path}" if path is not None else "mask <bytes>"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open_allowed(data, name, max_pixels)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


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
        bad = ~np.isfinite(arr)
        if bad.any():
            # inf/NaN would set the peak (or become huge values) and turn the whole image black or white.
            finite = arr[~bad]
            arr = np.where(bad, np.clip(np.nan_to_num(arr, nan=0.0), finite.min(initial=0.0),
                                        finite.max(initial=0.0)), arr)
            notes.append(f"replaced {int(bad.sum())} non-finite pixel value(s) (inf/NaN) by the nearest finite "
                         "extreme")
        if mode == "F":
            peak = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0
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
        try:  # lazy: ImageCms needs LittleCMS, which some Pillow builds lack (ImportError handled below)
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


def load_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Photo:
    """Reads a photo from a path or bytes into an upright RGB uint8 array.

    EXIF orientation is applied (``ImageOps.exif_transpose``). Grayscale, 1-bit, palette,
    CMYK (through its ICC profile when present), 16-bit and float images are converted to
    8-bit RGB; alpha is composited on white. Every such change is listed in ``Photo.notes``.

    Args:
        source: A file path, or the file's bytes.
        max_pixels: Refuse images with more than this many pixels (width x height), checked
            before decoding.
        max_bytes: Refuse files larger than this, checked before reading (links are followed;
            folders, FIFOs and devices are refused without being opened).

    Returns:
        The :class:`Photo`.

    Raises:
        ImageError: If the file is missing, not a regular file, not in an allowed format
            (:data:`ALLOWED_FORMATS`, identified by content), corrupt or truncated, or too large.
    """
    if max_pixels <= 0:
        raise ImageError(f"max_pixels must be positive, got {max_pixels}")
    data, path = _read_source(source, max_bytes)
    name = str(path) if path is not None else "<bytes>"
    digest = hashlib.sha256(data).hexdigest()
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open_allowed(data, name, max_pixels)
        width, height = im.size

    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"used the first of {im.n_frames} frames")
    icc_profile = im.info.get("icc_profile") or None
    exif_obj = im.getexif()
    orientation = exif_obj.get(_ORIENTATION_TAG, 1)
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        im = ImageOps.exif_transpose(im)
        notes.append(f"rotated upright by EXIF orientation {orientation}")
    elif orientation not in (None, 1):
        notes.append(f"ignored the invalid EXIF orientation {orientation!r} (valid: 1-8); pixels used as stored")
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
        with atomic_path(path) as tmp:  # a kill never leaves a partial file under the final name
            Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(tmp, **kwargs)
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


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resizes ``(3, H, W)`` or ``(B, 3, H, W)`` float images to ``size x size`` (bilinear with
    antialiasing, pixel centres aligned as ``align_corners=False``); returns ``x`` itself when it
    already has that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    batch = x if x.ndim == 4 else x[None]
    out = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out if x.ndim == 4 else out[0]


def to_pil(x: torch.Tensor | np.ndarray) -> Image.Image:
    """A PIL RGB image from a ``(3, H, W)`` float tensor in [-1, 1] (clamped, rounded) or an
    ``(H, W, 3)`` uint8 array."""
    arr = tensor_to_uint8(x.detach().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def as_photo(source: Source | Photo | Image.Image | np.ndarray | torch.Tensor) -> Photo:
    """A :class:`Photo` from a path, bytes, PIL image, ``(H, W, 3)`` uint8 array, or ``(3, H, W)``
    float tensor in [-1, 1]. Files go through :func:`load_image` (its limits and formats); in-memory
    pixels are copied, made read-only and keyed by the sha256 of their bytes.

    Raises:
        ImageError: Unreadable file, unsupported object, or pixels of the wrong shape or dtype.
    """
    if isinstance(source, Photo):
        return source
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        return load_image(source)
    notes: list[str] = []
    if isinstance(source, Image.Image):
        try:  # the file loader's conversions: 16-bit and float modes scaled, alpha on white, CMYK, ...
            rgb, _ = _to_rgb(source, notes)
            pixels = np.asarray(rgb, dtype=np.uint8)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - a closed image, an exotic mode: not a usable photo
            raise ImageError(f"cannot read the PIL image ({type(e).__name__}: {e}); pass an open RGB image") from None
    elif isinstance(source, torch.Tensor):
        if source.ndim != 3 or source.shape[0] != 3 or not source.is_floating_point():
            raise ImageError(f"a tensor photo must be float (3, H, W) in [-1, 1], got {list(source.shape)} {source.dtype}")
        if source.is_meta or not bool(torch.isfinite(source).all()):
            raise ImageError("a tensor photo must hold finite values in [-1, 1]; this one holds NaN or inf (or no data)")
        pixels = tensor_to_uint8(source.detach().cpu())
    elif isinstance(source, np.ndarray):
        pixels = source
    else:
        raise ImageError(f"cannot read a photo from a {type(source).__name__}; pass a path, PIL image, "
                         "(H, W, 3) uint8 array or (3, H, W) tensor in [-1, 1]")
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(f"a photo array must be (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageError(f"the photo is empty ({pixels.shape[1]}x{pixels.shape[0]} pixels)")
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    pixels = pixels.copy()
    pixels.setflags(write=False)
    return Photo(pixels=pixels, original_size=(pixels.shape[1], pixels.shape[0]), sha256=digest, notes=tuple(notes))
