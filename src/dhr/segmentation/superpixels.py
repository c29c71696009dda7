"""SLIC superpixels of an aligned image (wraps :func:`skimage.segmentation.slic`).

The reference (section 1.3) runs ``slic(cv2.imread(path), n_segments=200, compactness=30, sigma=1)``,
i.e. on the **BGR** uint8 file with skimage's defaults otherwise (Lab conversion, 10 iterations,
connectivity enforced, labels from 1). We run on RGB by default; ``bgr=True`` reproduces the reference's
channel order. The uint8 image is obtained from the [-1, 1] tensor by rounding ``(x + 1) * 127.5``
(which recovers the file's pixels exactly when the tensor came from ``p / 127.5 - 1``);
``truncate=True`` casts by truncation instead (what the reference does to the detector's input, not
to SLIC's: SLIC reads the file, so the reference preset rounds too).
"""

from __future__ import annotations

import numpy as np
import torch

from dhr.checks import check_shape
from dhr.errors import ConfigError

__all__ = ["to_uint8", "slic_labels"]


def to_uint8(image: torch.Tensor, *, truncate: bool = False) -> np.ndarray:
    """Converts a ``(3, H, W)`` tensor in [-1, 1] to ``(H, W, 3)`` uint8 RGB.

    Args:
        image: ``(3, H, W)`` float; values outside [-1, 1] are clamped.
        truncate: Cast by truncation toward zero like the reference (``(x / 2 + 0.5) * 255`` then a uint8
            cast) instead of rounding to nearest.

    Returns:
        ``(H, W, 3)`` uint8 array.
    """
    check_shape(image, [3, "H", "W"], "image")
    v = (image.detach().to(torch.float64).clamp(-1.0, 1.0) + 1.0) * 127.5
    v = v.floor() if truncate else v.round()
    return np.ascontiguousarray(v.to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def slic_labels(image: torch.Tensor, *, n_segments: int = 200, compactness: float = 30.0, sigma: float = 1.0,
                bgr: bool = False, truncate: bool = False) -> torch.Tensor:
    """SLIC superpixel labels of an image.

    Args:
        image: ``(3, H, W)`` RGB float in [-1, 1].
        n_segments: Approximate number of superpixels (200 in the reference).
        compactness: Colour/space trade-off (30 in the reference).
        sigma: Gaussian pre-smoothing (1 in the reference).
        bgr: Feed the channels in BGR order, reproducing the reference's ``cv2.imread`` input.
        truncate: Truncate instead of round when converting to uint8 (see :func:`to_uint8`).

    Returns:
        ``(H, W)`` int64 labels in ``1..S`` on the image's device.

    Raises:
        ShapeError: If ``image`` is not ``(3, H, W)``.
        ConfigError: If ``n_segments`` < 1 or ``compactness`` <= 0.
    """
    if n_segments < 1:
        raise ConfigError(f"n_segments={n_segments} must be >= 1")
    if not compactness > 0:
        raise ConfigError(f"compactness={compactness} must be > 0")
    if sigma < 0:
        raise ConfigError(f"sigma={sigma} must be >= 0")
    from skimage.segmentation import slic

    pixels = to_uint8(image, truncate=truncate)
    if bgr:
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    labels = slic(pixels, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=1,
                  channel_axis=-1)
    return torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(image.device)
