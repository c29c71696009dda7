"""Pixel and structure metrics of reconstructions: MSE, PSNR, SSIM and their masked variants.

Images are float tensors ``(B, 3, H, W)`` (or ``(3, H, W)``) in [-1, 1]; every function returns
one value per image, ``(B,)``. Masks are ``(B, 1, H, W)`` (or ``(1, H, W)`` / ``(H, W)``) weights in
[0, 1], usually binary; a masked metric averages only over the pixels where the mask is set. An
empty mask (no pixel) gives NaN for that image, never a made-up number.

Conventions (reference ``scripts/test.py``, see ``docs/bench.md``):

- **MSE** is the mean over channels and pixels of the squared difference *in the [-1, 1] range*.
- **PSNR** = ``10 log10(peak² / MSE)``. The peak-to-peak range of [-1, 1] is 2, so the correct
  value uses ``peak² = 4`` (``variant="standard"``, identical to the PSNR of the same images in
  [0, 1] with peak 1). The reference code uses ``2 / MSE`` (``variant="reference"``), which is
  ``10 log10 2 ≈ 3.01`` dB lower; use it only to compare with the paper's README.
- **SSIM** (Wang et al. 2004): 11x11 Gaussian window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = 2`` (the data range of [-1, 1]), population (biased) local statistics, computed per channel
  and averaged over channels. :func:`ssim_map` is full size (reflect padding at the borders);
  away from the borders it equals scikit-image's ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=2)``. :func:`ssim` averages the full map (so
  ``ssim(x, y) == ssim(x, y, mask=ones)``); scikit-image instead drops a 5-pixel border.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from dhr import reductions
from dhr.checks import check_choice
from dhr.errors import ShapeError

__all__ = [
    "PSNR_PEAK_SQUARED",
    "as_batch",
    "as_mask",
    "gaussian_window",
    "masked_lpips",
    "mse",
    "psnr",
    "psnr_from_mse",
    "ssim",
    "ssim_map",
]

PSNR_PEAK_SQUARED: dict[str, float] = {"standard": 4.0, "reference": 2.0}
"""``peak²`` of :func:`psnr` per variant: 4 = (max - min)² of [-1, 1]; 2 = the reference code's value."""

PsnrVariant = Literal["standard", "reference"]


def as_batch(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, 3, H, W)``; checks a float ``(B, C, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ShapeError(f"{name} must be (B, C, H, W) or (C, H, W), got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be a float tensor in [-1, 1], got dtype {x.dtype}")
    return x


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_batch(x, "x"), as_batch(y, "y")
    if x.shape != y.shape:
        raise ShapeError(f"x and y must have the same shape, got {list(x.shape)} and {list(y.shape)}")
    return x, y.to(x)


def as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Brings ``mask`` (``(H, W)``, ``(1, H, W)``, ``(B, 1, H, W)``) to ``(B, 1, H, W)`` float like ``like``.

    Raises:
        ShapeError: Spatial size differs from ``like`` or values outside [0, 1].
    """
    if not isinstance(mask, torch.Tensor):
        raise ShapeError(f"mask must be a tensor, got {type(mask).__name__}")
    m = mask
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] == like.shape[0] and m.shape[0] != 1 else m[None]
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != tuple(like.shape[-2:]):
        raise ShapeError(f"mask must be (B, 1, H, W) matching the images {list(like.shape)}, got {list(mask.shape)}")
    if m.shape[0] not in (1, like.shape[0]):
        raise ShapeError(f"mask batch {m.shape[0]} does not match the images' batch {like.shape[0]}")
    m = m.to(device=like.device, dtype=like.dtype)
    if bool((m < 0).any()) or bool((m > 1).any()):
        raise ShapeError("mask values must lie in [0, 1] (1 = pixel counted)")
    return m.expand(like.shape[0], 1, *like.shape[-2:])


def _region_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of ``values (B, C, H, W)`` over the pixels of ``mask`` (any shape
    :func:`as_mask` takes, checked); NaN for an empty mask: the metric choices of
    :func:`dhr.reductions.masked_mean`. Returns ``(B,)``."""
    m = None if mask is None else as_mask(mask, values)
    return reductions.masked_mean(values, m, channels="mean", empty=math.nan)


def mse(x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in the [-1, 1] range, per image.

    Args:
        x: ``(B, 3, H, W)`` images in [-1, 1].
        y: Same shape.
        mask: Optional ``(B, 1, H, W)`` region (1 = counted).

    Returns:
        ``(B,)`` MSE (NaN where the mask is empty).
    """
    x, y = _pair(x, y)
    return _region_mean((x - y).square(), mask)


def psnr_from_mse(value: torch.Tensor, variant: PsnrVariant = "standard") -> torch.Tensor:
    """``10 log10(peak² / mse)`` with ``peak²`` from :data:`PSNR_PEAK_SQUARED` (inf for mse 0)."""
    check_choice(variant, tuple(PSNR_PEAK_SQUARED), "variant")
    return 10.0 * torch.log10(PSNR_PEAK_SQUARED[variant] / value)


def psnr(x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None,
         variant: PsnrVariant = "standard") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [-1, 1], per image.

    Args:
        x: ``(B, 3, H, W)`` in [-1, 1].
        y: Same shape.
        mask: Optional region (PSNR of the masked MSE).
        variant: ``standard`` (peak² = 4, correct for [-1, 1]) or ``reference`` (2 / MSE, as the
            reference's ``scripts/test.py``; 3.01 dB lower).

    Returns:
        ``(B,)`` in dB (inf for identical images, NaN for an empty mask).
    """
    return psnr_from_mse(mse(x, y, mask=mask), variant)


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(size,)`` (the separable SSIM window)."""
    if size < 1 or size % 2 == 0:
        raise ShapeError(f"window size must be a positive odd number, got {size}")
    if not sigma > 0:
        raise ShapeError(f"sigma must be > 0, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, reflect padding, same size."""
    c = x.shape[1]
    pad = g.numel() // 2
    h = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    v = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), h, groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), v, groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 2.0, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Local SSIM, averaged over channels, at full size.

    Args:
        x: ``(B, C, H, W)`` in [-1, 1] (H, W > window_size // 2 for the reflect padding).
        y: Same shape.
        window_size: Odd Gaussian window width (11).
        sigma: Window σ (1.5).
        data_range: L, the value range (2 for [-1, 1]).
        k1: Luminance constant K1.
        k2: Contrast constant K2.

    Returns:
        ``(B, 1, H, W)`` SSIM in [-1, 1] (1 where the images agree locally).
    """
    x, y = _pair(x, y)
    pad = window_size // 2
    if min(x.shape[-2:]) <= pad:
        raise ShapeError(f"SSIM with an {window_size}-pixel window needs images larger than {pad} px, "
                         f"got {list(x.shape[-2:])}")
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y = x.to(work), y.to(work)
    g = gaussian_window(window_size, sigma, dtype=work, device=x.device)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x.square()
    syy = _blur(y * y, g) - mu_y.square()
    sxy = _blur(x * y, g) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.square() + mu_y.square() + c1) * (sxx + syy + c2))
    return s.mean(dim=1, keepdim=True)


def ssim(x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None, window_size: int = 11,
         sigma: float = 1.5, data_range: float = 2.0) -> torch.Tensor:
    """Structural similarity per image: the mean of :func:`ssim_map` (over ``mask`` if given).

    Args:
        x: ``(B, 3, H, W)`` in [-1, 1].
        y: Same shape.
        mask: Optional region (1 = counted).
        window_size: Gaussian window width.
        sigma: Window σ.
        data_range: L (2 for [-1, 1]).

    Returns:
        ``(B,)`` in [-1, 1]; 1 for identical images (NaN for an empty mask).
    """
    smap = ssim_map(x, y, window_size=window_size, sigma=sigma, data_range=data_range)
    return _region_mean(smap, mask).to(as_batch(x).dtype)


def masked_lpips(perceptual: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """LPIPS per image, restricted to a region through the metric's spatial map.

    Without a mask this is the plain LPIPS ``perceptual(x, y)``. With a mask it is the mean of
    ``perceptual.spatial(x, y)`` (the per-layer maps upsampled to full size and summed) over the
    mask's pixels, so a full mask gives (up to interpolation) the plain value.

    Args:
        perceptual: Module with ``__call__(x, y) -> (B,)`` and ``spatial(x, y) -> (B, 1, H, W)``
            (``dhr.metrics.lpips.LPIPS`` or the model's ``TinyPerceptual``).
        x: ``(B, 3, H, W)`` in [-1, 1].
        y: Same shape.
        mask: Optional region.

    Returns:
        ``(B,)`` (NaN where the mask is empty).
    """
    x, y = _pair(x, y)
    with torch.no_grad():
        if mask is None:
            return perceptual(x, y).reshape(-1).to(x.dtype)
        spatial = perceptual.spatial(x, y)
        return _region_mean(spatial.to(x.dtype), mask)
