"""Per-image random streams: a photo's result must not depend on the batch it is processed in.

Every random draw made for one image (latent noise and noise maps of the optimisation embedding
and of DHR's coarse inversion) comes from a :class:`torch.Generator` seeded with
``(run seed, image key)``. The key is a content hash of the image (:func:`image_key`) unless the
caller gives one, never the image's position in a batch, so the same photo gets the same stream
alone, in any batch, at any position, and in ``dhr dist`` (one photo per task).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from dhr.errors import ConfigError

__all__ = ["image_key", "image_keys", "image_generator"]


def image_key(image: torch.Tensor) -> str:
    """Content key of one image: sha256 (first 16 hex digits) of its 8-bit quantisation.

    The image is rounded to the 256 levels of [-1, 1] first, so the key is the same on every
    device and for float rounding noise below half a level.

    Args:
        image: ``(3, H, W)`` float in [-1, 1].

    Returns:
        16 hex digits.
    """
    q = ((image.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    h = hashlib.sha256(str(tuple(q.shape)).encode())
    h.update(q.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def image_keys(images: torch.Tensor, keys: Sequence[str] | None = None) -> list[str]:
    """The per-image keys of a batch ``(B, 3, H, W)``: ``keys`` checked, or content keys.

    Raises:
        ConfigError: ``keys`` does not hold one non-empty string per image.
    """
    b = images.shape[0]
    if keys is None:
        return [image_key(images[i]) for i in range(b)]
    keys = list(keys)
    if len(keys) != b or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"keys must hold one non-empty string per image ({b} images), got {keys!r}")
    return keys


def image_generator(seed: int, key: str, stream: str = "") -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from the run seed, an image key and a stream name.

    Args:
        seed: Run seed (e.g. ``OptimConfig.seed``).
        key: The image's key (:func:`image_key` or a caller-given id).
        stream: Distinguishes independent streams of the same image (e.g. ``"coarse"``).
    """
    digest = hashlib.sha256(f"dhr:{int(seed)}:{key}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))
