"""Baseline refinements behind the same interface as :func:`dhr.refinement.hybrid.refine_dhr`.

- :func:`refine_pti`: pivotal tuning (Roich et al.; reference section 2): every synthesis
  parameter is tuned on the whole image with LPIPS + MSE, fixed noise, no locality regulariser.
- :func:`refine_feature`: feature-only refinement (HFGI/SAM-style): the feature f at the DHR
  feature resolution is optimised on the whole image and replaces the generator's feature
  everywhere; no weight tuning.
- :func:`embedding_only`: the embedding itself as the result (methods ``encoder`` / ``optim``).

All return ``list[Inversion]`` and never modify the generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from dhr.bundle import DELTA_FORMATS, DeltaFormat, tensor_sha256
from dhr.checks import check_choice, check_non_negative
from dhr.errors import ConfigError
from dhr.models.stylegan2 import Generator
from dhr.refinement.hybrid import (
    ProgressFn,
    RefineConfig,
    _check_perceptual,
    check_inputs,
    finalize,
    freeze_tune_resolutions,
    optimize_hybrid,
    resolve_feature_resolution,
    tuned_parameter_names,
    tuning_config_dict,
)
from dhr.refinement.render import render_many
from dhr.types import Inversion

__all__ = ["PTIConfig", "refine_pti", "refine_feature", "embedding_only"]


@dataclass(frozen=True)
class PTIConfig:
    """Pivotal tuning options (defaults: the reference ``pti.yaml``).

    Attributes:
        steps: Tuning iterations (reference 350).
        lr: Adam learning rate of the synthesis weights (3e-4).
        l2_weight: Weight of the MSE (per-element mean over the image).
        lpips_weight: Weight of LPIPS (plain, whole image).
        tune_resolutions: Restrict tuning to these blocks (None: all synthesis parameters).
        noise_mode: ``const`` (the generator's fixed buffers) or ``none``.
        delta_format: Storage format of the weight delta (see :mod:`dhr.bundle`).
    """

    steps: int = 350
    lr: float = 3e-4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    tune_resolutions: tuple[int, ...] | None = None
    noise_mode: Literal["const", "none"] = "const"
    delta_format: DeltaFormat = "fp16"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps={self.steps} must be >= 0")
        check_non_negative(self, ("lr", "l2_weight", "lpips_weight"))
        check_choice(self.noise_mode, ("const", "none"), "noise_mode")
        check_choice(self.delta_format, DELTA_FORMATS, "delta_format")
        freeze_tune_resolutions(self)

    def to_dict(self) -> dict:
        return tuning_config_dict(self)


def refine_pti(G: Generator, target: torch.Tensor, ws: torch.Tensor, perceptual, config: PTIConfig | None = None,
               *, progress: ProgressFn | None = None, vectorize: bool = False) -> list[Inversion]:
    """Pivotal tuning of the synthesis weights on whole images.

    Args:
        G: Generator (not modified).
        target: ``(B, 3, R, R)`` targets in [-1, 1].
        ws: ``(B, num_ws, D)`` pivots (kept fixed).
        perceptual: LPIPS module with ``layer_maps``.
        config: Options; default :class:`PTIConfig()`.
        progress: Optional ``progress(stage, step, total, info)`` callback.
        vectorize: Tune the batch together (see :func:`dhr.refinement.hybrid.refine_dhr`); False
            (default): one image after the other, each bit-identical to its B=1 run.

    Returns:
        One :class:`Inversion` per image (method ``pti``, no feature); the loss curve is
        ``loss_in`` (whole image).
    """
    config = config or PTIConfig()
    ws = check_inputs(G, target, ws)
    _check_perceptual(perceptual)
    names = tuned_parameter_names(G, "synthesis", config.tune_resolutions)
    p = next(G.parameters())
    target, ws = target.to(p), ws.to(p)
    ones = torch.ones(target.shape[0], 1, G.resolution, G.resolution, device=p.device, dtype=p.dtype)
    result = optimize_hybrid(
        G, target, ws, perceptual, mask=ones, soft_mask=ones, theta_names=names, resolution=None, blend=False,
        steps=config.steps, weight_steps=config.steps, feature_lr=0.0, weight_lr=config.lr,
        l2_weight=config.l2_weight, lpips_weight=config.lpips_weight, l2_channel_sum=False,
        noise_mode=config.noise_mode, stage="pti", progress=progress, vectorize=vectorize,
    )
    for c in result.curves:
        c.pop("loss_out")
    return finalize(G, target, ws, result, method="pti", resolution=None, feature_mask=None, domains=None,
                    delta_format=config.delta_format, feature_format="fp32", noise_mode=config.noise_mode,
                    freeze_ood_skip=False, config={"pti": config.to_dict()})


def refine_feature(G: Generator, target: torch.Tensor, ws: torch.Tensor, perceptual,
                   config: RefineConfig | None = None, *, progress: ProgressFn | None = None,
                   vectorize: bool = False) -> list[Inversion]:
    """Feature-only refinement on whole images (no weight tuning).

    Uses ``config.feature_resolution``, ``steps``, ``feature_lr``, the loss weights and
    ``l2_channel_sum`` of the DHR configuration; f is initialised from the generator's own feature.
    ``vectorize`` as in :func:`refine_pti`.

    Returns:
        One :class:`Inversion` per image (method ``feature``, ``feature_mask=None``: f replaces the
        generator's feature everywhere); the loss curve is ``loss_out`` (whole image).
    """
    config = config or RefineConfig()
    ws = check_inputs(G, target, ws)
    _check_perceptual(perceptual)
    r = resolve_feature_resolution(G, config.feature_resolution)
    p = next(G.parameters())
    target, ws = target.to(p), ws.to(p)
    zeros = torch.zeros(target.shape[0], 1, G.resolution, G.resolution, device=p.device, dtype=p.dtype)
    result = optimize_hybrid(
        G, target, ws, perceptual, mask=zeros, soft_mask=zeros, theta_names=[], resolution=r, blend=False,
        steps=config.steps, weight_steps=0, feature_lr=config.feature_lr, weight_lr=0.0,
        l2_weight=config.l2_weight, lpips_weight=config.lpips_weight, l2_channel_sum=config.l2_channel_sum,
        noise_mode=config.noise_mode, stage="feature", progress=progress, vectorize=vectorize,
    )
    for c in result.curves:
        c.pop("loss_in")
    return finalize(G, target, ws, result, method="feature", resolution=r, feature_mask=None, domains=None,
                    delta_format=config.delta_format, feature_format=config.feature_format,
                    noise_mode=config.noise_mode, freeze_ood_skip=False, config={"feature": config.to_dict()})


def embedding_only(G: Generator, target: torch.Tensor, ws: torch.Tensor, *, method: str = "encoder",
                   losses: Sequence[dict[str, list[float]]] | None = None,
                   noise_mode: str = "const") -> list[Inversion]:
    """Wraps W+ codes as inversions without refinement (empty delta, no feature).

    Args:
        G: Generator.
        target: ``(B, 3, R, R)`` targets.
        ws: ``(B, num_ws, D)`` codes.
        method: ``encoder`` or ``optim``.
        losses: Optional loss curves per image (from the embedding stage).
        noise_mode: Noise used to render.

    Returns:
        One :class:`Inversion` per image, ``image`` = G(ws).
    """
    check_choice(method, ("encoder", "optim"), "method")
    check_choice(noise_mode, ("const", "none"), "noise_mode")
    ws = check_inputs(G, target, ws)
    invs = [
        Inversion(ws=ws[i].detach(), image=torch.zeros_like(target[i]), target=target[i].detach(), method=method,
                  losses=dict(losses[i]) if losses else {},
                  meta={"noise_mode": noise_mode, "input_sha256": tensor_sha256(target[i]), "timings": {}})
        for i in range(target.shape[0])
    ]
    images = render_many(G, invs)
    return [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(invs)]
