"""Masked reconstruction losses of Hybrid Modulation Refinement, as pure functions.

Paper eqs. 5-7: ``L = L2 + λ L_lpips`` and the two region losses
``L ⊙ m / ||m||`` (in-domain, drives θ) and ``L ⊙ (1 - m) / ||1 - m||`` (out-of-domain, drives f).

All functions reduce per image and return ``(B,)``, so a batch of independent images gives
independent gradients when the result is summed. Masks are float tensors in [0, 1] with 1 = the
region the loss is about. An empty region gives a loss of exactly 0 with a zero (never NaN)
gradient; the reference divides by zero there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dhr.checks import check_shape
from dhr.errors import ShapeError
from dhr.reductions import masked_mean  # the one masked_mean (issue #17); re-exported

__all__ = ["masked_mean", "masked_l2", "masked_lpips", "resize_mask"]


def masked_l2(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, channel_sum: bool = True) -> torch.Tensor:
    """Masked squared error per image (paper L2 restricted to a region).

    Args:
        x: ``(B, C, H, W)`` reconstruction in [-1, 1].
        y: ``(B, C, H, W)`` target in [-1, 1].
        mask: ``(B, 1, H, W)`` region weights (the binary full-resolution mask in DHR).
        channel_sum: If True (the reference), the numerator sums the C channels while the
            denominator counts pixels, i.e. C times the per-element mean. If False, the true
            per-element mean over the region.

    Returns:
        ``(B,)`` losses; 0 for an empty region.
    """
    b = check_shape(x, ["B", "C", "H", "W"], "x")
    check_shape(y, [b["B"], b["C"], b["H"], b["W"]], "y")
    se = (x - y).square().sum(dim=1, keepdim=True)
    if not channel_sum:
        se = se / b["C"]
    return masked_mean(se, mask)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``(B, 1, H, W)`` to ``size`` (the reference's per-layer mask rule)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="nearest")


def masked_lpips(maps: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Masked LPIPS from per-layer distance maps.

    Each layer map ``(B, 1, h_l, w_l)`` (``LPIPS.layer_maps``) is weighted by ``mask`` nearest-resized
    to ``(h_l, w_l)``; the masked means are summed over layers. With an all-ones mask this is the
    plain LPIPS distance.

    Args:
        maps: Per-layer maps ``(B, 1, h_l, w_l)``.
        mask: ``(B, 1, H, W)`` region weights in [0, 1] (the soft feature-resolution mask in DHR).

    Returns:
        ``(B,)``; a layer whose resized mask is empty contributes 0.
    """
    if len(maps) == 0:
        raise ShapeError("masked_lpips needs at least one layer map")
    check_shape(mask, [maps[0].shape[0], 1, "H", "W"], "mask")
    total = None
    for m in maps:
        term = masked_mean(m, resize_mask(mask.to(m.dtype), m.shape[-2:]))
        total = term if total is None else total + term
    return total
