"""Refinement stage: Hybrid Modulation Refinement (DHR), baselines and rendering of results."""

from __future__ import annotations

from dhr.refinement.baselines import PTIConfig, embedding_only, refine_feature, refine_pti
from dhr.refinement.hybrid import RefineConfig, refine_dhr, resolve_feature_resolution, valid_feature_resolutions
from dhr.refinement.losses import masked_l2, masked_lpips, masked_mean
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
    "resolve_feature_resolution",
    "valid_feature_resolutions",
]
