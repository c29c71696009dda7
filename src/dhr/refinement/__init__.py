"""Refinement stage: Hybrid Modulation Refinement (DHR), baselines and rendering of results.

- :mod:`~dhr.refinement.hybrid`: :class:`RefineConfig` and :func:`refine_dhr` (its loop, ``dhr_loop``);
- :mod:`~dhr.refinement.baselines`: :class:`PTIConfig`, :func:`refine_pti`, :func:`refine_feature`
  (their loops) and :func:`embedding_only`;
- :mod:`~dhr.refinement.loop`: what the three loops share (prefix caching, curves, batching);
- :mod:`~dhr.refinement.losses`: the masked and whole-image losses;
- :mod:`~dhr.refinement.render`: rendering an :class:`~dhr.types.Inversion` by its
  :class:`~dhr.types.RenderSpec`.

It knows nothing of files: storing results (quantisation, provenance) is :mod:`dhr.bundle`'s.
"""

from __future__ import annotations

from dhr.refinement.baselines import PTIConfig, embedding_only, refine_feature, refine_pti
from dhr.refinement.hybrid import RefineConfig, refine_dhr, resolve_feature_resolution, valid_feature_resolutions
from dhr.refinement.losses import masked_l2, masked_lpips, masked_mean, whole_image_loss
from dhr.refinement.render import render, render_many

__all__ = [
    "RefineConfig",
    "PTIConfig",
    "refine_dhr",
    "refine_pti",
    "refine_feature",
    "embedding_only",
    "render",
    "render_many",
    "masked_mean",
    "masked_l2",
    "masked_lpips",
    "whole_image_loss",
    "resolve_feature_resolution",
    "valid_feature_resolutions",
]
