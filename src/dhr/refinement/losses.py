"""Masked reconstruction losses of Hybrid Modulation Refinement, as pure functions.

Paper eqs. 5-7: ``L = L2 + λ L_lpips`` and the two region losses
``L ⊙ m / ||m||`` (in-domain, drives θ) and ``L ⊙ (1 - m) / ||1 - m||`` (out-of-domain, drives f)
(:func:`hybrid_losses`); the baselines use ``L`` on the whole image (:func:`whole_image_loss`).

All functions reduce per image and return ``(B,)``, so a batch of independent images gives
independent gradients when the result is summed. Masks are float tensors in [0, 1] with 1 = the
region the loss is about. An empty region gives a loss of exactly 0 with a zero (never NaN)
gradient; the reference divides by zero there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from dhr.checks import check_shape
from dhr.errors import ShapeError
from dhr.reductions import masked_mean  # the one masked_mean (issue #17); re-exported

__all__ = ["masked_mean", "masked_l2", "masked_lpips", "resize_mask", "hybrid_losses", "hybrid_loss_terms",
           "whole_image_loss", "target_maps_fn"]


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


def hybrid_losses(image: torch.Tensor, target: torch.Tensor, perceptual, *, mask: torch.Tensor,
                  soft_mask: torch.Tensor, l2_weight: float, lpips_weight: float, l2_channel_sum: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """In- and out-of-domain losses of one forward (paper eqs. 5-7), per image.

    Args:
        image: ``(B, 3, R, R)`` reconstruction.
        target: ``(B, 3, R, R)`` target X.
        perceptual: Module with ``layer_maps`` (LPIPS).
        mask: ``(B, 1, R, R)`` binary m (L2 terms).
        soft_mask: ``(B, 1, r, r)`` soft m_r, nearest-resized per LPIPS layer.
        l2_weight, lpips_weight, l2_channel_sum: See :class:`~dhr.refinement.hybrid.RefineConfig`.

    Returns:
        ``(loss_in, loss_out)``, each ``(B,)``.
    """
    t = hybrid_loss_terms(image, target, perceptual, mask=mask, soft_mask=soft_mask, l2_channel_sum=l2_channel_sum)
    loss_in = l2_weight * t["l2_in"] + lpips_weight * t["lpips_in"]
    loss_out = l2_weight * t["l2_out"] + lpips_weight * t["lpips_out"]
    return loss_in, loss_out


def hybrid_loss_terms(image: torch.Tensor, target: torch.Tensor, perceptual, *, mask: torch.Tensor,
                      soft_mask: torch.Tensor, l2_channel_sum: bool,
                      maps: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The four unweighted terms of :func:`hybrid_losses` (the reference's MSE_in, LPIPS_in, MSE_out,
    LPIPS_out, section 1.6), each ``(B,)``: ``l2_in``, ``lpips_in``, ``l2_out``, ``lpips_out``.

    ``maps`` are the perceptual layer maps of ``(image, target)`` when already computed (e.g. by
    :func:`target_maps_fn`); default ``perceptual.layer_maps(image, target)``."""
    if maps is None:
        maps = perceptual.layer_maps(image, target)
    return {
        "l2_in": masked_l2(image, target, mask, channel_sum=l2_channel_sum),
        "lpips_in": masked_lpips(maps, soft_mask),
        "l2_out": masked_l2(image, target, 1 - mask, channel_sum=l2_channel_sum),
        "lpips_out": masked_lpips(maps, 1 - soft_mask),
    }


def whole_image_loss(image: torch.Tensor, target: torch.Tensor, maps: Sequence[torch.Tensor], *,
                     l2_weight: float, lpips_weight: float, l2_channel_sum: bool) -> torch.Tensor:
    """``l2_weight * L2 + lpips_weight * LPIPS`` over the whole image, per image: the PTI and
    feature-only objective (eq. 5 with the whole image as the region).

    Args:
        image: ``(B, 3, R, R)`` reconstruction.
        target: ``(B, 3, R, R)`` target.
        maps: Perceptual layer maps of ``(image, target)``, each ``(B, 1, h_l, w_l)``.
        l2_weight, lpips_weight: Weights of the two terms.
        l2_channel_sum: Sum the squared error over channels (the DHR reference) instead of the mean.

    Returns:
        ``(B,)``.
    """
    everywhere = torch.ones_like(target[:, :1])
    return l2_weight * masked_l2(image, target, everywhere, channel_sum=l2_channel_sum) + \
        lpips_weight * masked_lpips(maps, everywhere)


def target_maps_fn(perceptual, target: torch.Tensor) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``image -> perceptual.layer_maps(image, target)`` for a fixed ``target (B, 3, R, R)``.

    When the network offers ``taps_of`` and ``layer_maps_from`` (:class:`dhr.metrics.lpips.LPIPS`,
    the bundled model's distilled network), the target's backbone features are computed once here
    instead of in every optimisation step; the maps are the same.
    """
    if callable(getattr(perceptual, "layer_maps_from", None)) and callable(getattr(perceptual, "taps_of", None)):
        with torch.no_grad():
            taps = [t.detach() for t in perceptual.taps_of(target)]
        return lambda image: perceptual.layer_maps_from(image, taps)
    return lambda image: perceptual.layer_maps(image, target)
