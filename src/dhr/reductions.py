"""Masked reductions shared by the refinement losses and the metrics (one ``masked_mean``).

Both average a per-pixel map over a region; they differ in two documented choices, which are
arguments here instead of two functions of the same name:

- ``channels``: ``"sum"`` sums the C channels and averages over the region's pixels (the
  reference's masked L2: ``Σ x·m / Σ m``, C times the per-element mean); ``"mean"`` is the
  per-element mean (``Σ x·m / (C Σ m)``), what a metric reports.
- ``empty``: the value for an image whose mask sums to 0: ``0.0`` for a loss (the term vanishes,
  with zero gradient), NaN for a metric (undefined, never a fake perfect score).
"""

from __future__ import annotations

from typing import Literal

import torch

from dhr.checks import check_choice, check_shape

__all__ = ["masked_mean"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, *, channels: Literal["sum", "mean"] = "sum",
                empty: float = 0.0) -> torch.Tensor:
    """Per-image weighted mean of ``x`` over the pixels of ``mask``.

    Args:
        x: ``(B, C, H, W)`` values.
        mask: ``(B, 1, H, W)`` weights in [0, 1] (broadcast over channels in the numerator only), or
            None for every pixel. Not range-checked here (no host sync in optimisation loops):
            callers taking user masks check them (:func:`dhr.metrics.image.as_mask`).
        channels: ``"sum"`` (channels summed, pixels averaged; default) or ``"mean"``.
        empty: Value for images whose mask sums to 0; its gradient is zero.

    Returns:
        ``(B,)`` in ``x``'s dtype.

    Raises:
        ShapeError: ``x`` is not 4-D, or ``mask`` is not ``(B, 1, H, W)`` for ``x``'s B, H, W.
        ConfigError: Unknown ``channels``.
    """
    check_shape(x, ["B", "C", "H", "W"], "x")
    check_choice(channels, ("sum", "mean"), "channels")
    if mask is None:
        num, den = x.sum(dim=(1, 2, 3)), torch.full_like(x[:, 0, 0, 0], x.shape[2] * x.shape[3])
    else:
        check_shape(mask, [x.shape[0], 1, x.shape[2], x.shape[3]], "mask")
        mask = mask.to(x.dtype)
        num, den = (x * mask).sum(dim=(1, 2, 3)), mask.sum(dim=(1, 2, 3))
    if channels == "mean":
        den = den * x.shape[1]
    nonempty = den > 0
    safe = torch.where(nonempty, den, torch.ones_like(den))
    return torch.where(nonempty, num / safe, torch.full_like(num, empty))
