"""Reconstruction error maps and their per-superpixel scores v_k.

The reference (section 1.3) scores superpixel k as the sum over the perceptual network's layers of
the mean of that layer's error map under the superpixel's binary mask, nearest-resized to the layer's
size: LPIPS restricted to the region. :func:`superpixel_scores` computes all superpixels at once with
one ``bincount`` per layer (nearest-resizing a binary mask equals testing the nearest-resized label map
against k, so the label map is resized once per layer).

Superpixels that vanish at a coarse layer (no pixel of the resized label map carries them) make the
reference divide 0 by 0; the NaN then fails the ``< threshold`` test, so they silently become
out-of-domain. ``tiny`` chooses what happens instead; see :func:`superpixel_scores`.

Notation (paper -> code): v_i = ``scores[i - 1]``; the loss map between G(w) and x = ``error_maps``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from dhr.checks import check_choice, check_shape
from dhr.errors import ShapeError

__all__ = ["TinyPolicy", "TINY_POLICIES", "compute_error_maps", "superpixel_scores", "error_image"]

logger = logging.getLogger(__name__)

TinyPolicy = Literal["upsample", "in", "out", "reference"]
TINY_POLICIES: tuple[str, ...] = ("upsample", "in", "out", "reference")


@torch.no_grad()
def compute_error_maps(perceptual, image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-layer spatial error maps between one reconstruction and its target.

    Args:
        perceptual: Module with ``layer_maps(x, y) -> [(B, 1, h_l, w_l)]`` (e.g. ``LPIPS``).
        image: ``(3, R, R)`` reconstruction in [-1, 1] (the reference does not clamp it).
        target: ``(3, R, R)`` target in [-1, 1].

    Returns:
        One detached ``(1, h_l, w_l)`` map per layer.
    """
    b = check_shape(image, [3, "R", "R"], "image")
    check_shape(target, [3, b["R"], b["R"]], "target")
    return tuple(m[0].detach() for m in perceptual.layer_maps(image[None], target[None]))


def _check_maps(error_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if len(error_maps) == 0:
        raise ShapeError("error_maps is empty: pass at least one (1, h, w) map (e.g. from optimize_latent)")
    out = []
    for i, m in enumerate(error_maps):
        check_shape(m, [1, "h", "w"], f"error_maps[{i}]")
        out.append(m.detach())
    return out


def _label_means(values: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label sums / counts of ``values`` (flattened alike) for labels 0..n; returns (means, counts)."""
    lab = labels.reshape(-1)
    sums = torch.zeros(n + 1, dtype=torch.float64, device=values.device)
    sums.index_add_(0, lab, values.reshape(-1).to(torch.float64))
    counts = torch.bincount(lab, minlength=n + 1).to(torch.float64)
    return sums / counts, counts  # 0 / 0 = NaN where a label is absent


def superpixel_scores(error_maps: Sequence[torch.Tensor], labels: torch.Tensor, *, tiny: TinyPolicy = "upsample"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Error score v_k of every superpixel: the sum over layers of the layer's mean inside it.

    Args:
        error_maps: Per-layer maps ``(1, h_l, w_l)`` (native sizes).
        labels: ``(R, R)`` int64 superpixel labels in ``1..S``.
        tiny: What to do with a superpixel that no pixel of a coarse layer's nearest-resized label map
            carries. ``upsample`` (default): take that layer's mean on the map bilinearly upsampled to
            ``R x R`` instead, so every superpixel gets a finite score. ``in`` / ``out``: leave the score
            NaN and flag the superpixel as vanished; the caller puts it in / out of domain.
            ``reference``: NaN and flagged, later out-of-domain, as the reference does silently.

    Returns:
        ``(scores, vanished)``: ``(S,)`` float32 scores (label k at index k - 1) and ``(S,)`` bool, True
        where some layer lost the superpixel (never with ``upsample``).

    Raises:
        ShapeError: On malformed maps or labels.
        ConfigError: On an unknown ``tiny`` policy.
    """
    check_choice(tiny, TINY_POLICIES, "tiny")
    maps = _check_maps(error_maps)
    check_shape(labels, ["R", "R"], "labels")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ShapeError(f"labels must be an integer tensor, got {labels.dtype}")
    labels = labels.to(device=maps[0].device, dtype=torch.int64)
    if int(labels.min()) < 1:
        raise ShapeError(f"labels must start at 1 (skimage start_label=1), got minimum {int(labels.min())}")
    n = int(labels.max())
    size = labels.shape[-1]
    total = torch.zeros(n + 1, dtype=torch.float64, device=labels.device)
    for m in maps:
        h, w = m.shape[-2:]
        if (h, w) == (size, size):
            small = labels
        else:
            small = F.interpolate(labels[None, None].to(torch.float64), size=(h, w), mode="nearest")[0, 0].long()
        means, counts = _label_means(m[0], small, n)
        lost = counts == 0
        lost[0] = False
        if tiny == "upsample" and bool(lost.any()):
            up = F.interpolate(m[None].to(torch.float64), size=(size, size), mode="bilinear", align_corners=False)
            full, _ = _label_means(up[0, 0], labels, n)
            means = torch.where(lost, full, means)
            logger.debug("superpixel_scores: %d superpixels vanished at %dx%d; scored on the upsampled map",
                         int(lost.sum()), h, w)
        total = total + means
    scores = total[1:].to(torch.float32)
    vanished = torch.isnan(scores)
    if tiny == "out" and bool(vanished.any()):
        logger.info("superpixel_scores: %d superpixels vanished at a coarse layer and are put out of domain",
                    int(vanished.sum()))
    return scores, vanished


def error_image(error_maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Sum of the per-layer maps bilinearly upsampled to ``size x size``: ``(1, size, size)`` (for display)."""
    maps = _check_maps(error_maps)
    return sum(F.interpolate(m[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
               for m in maps)
