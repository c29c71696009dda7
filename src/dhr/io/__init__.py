"""Image input/output: decoding, EXIF orientation, colour modes and tensor conversions."""

from __future__ import annotations

from dhr.io.image import (
    DEFAULT_MAX_PIXELS,
    Photo,
    as_photo,
    load_image,
    save_image,
    tensor_to_uint8,
    to_pil,
    uint8_to_tensor,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Photo",
    "as_photo",
    "load_image",
    "save_image",
    "tensor_to_uint8",
    "to_pil",
    "uint8_to_tensor",
]
