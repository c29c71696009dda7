"""Baseline refinements behind the same interface as :func:`dhr.refinement.hybrid.refine_dhr`.

- :func:`refine_pti`: pivotal tuning (Roich et al.; reference section 2): every synthesis
  parameter is tuned on the whole image with LPIPS + MSE, fixed noise, no locality regulariser
  (its loop: :func:`pti_loop`).
- :func:`refine_feature`: feature-only refinement (HFGI/SAM-style): the feature f at the DHR
  feature resolution is optimised on the whole image and replaces the generator's feature
  everywhere; no weight tuning (its loop: :func:`feature_loop`).
- :func:`embedding_only`: the embedding itself as the result (methods ``encoder`` / ``optim``).

All return ``list[Inversion]`` holding their tensors exactly (the storage formats are in each
result's render spec; :func:`dhr.bundle.as_stored` applies them) and never modify the generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from dhr.checks import check_choice, check_non_negative
from dhr.errors import ConfigError
from dhr.models.stylegan2 import Generator
from dhr.refinement.hybrid import (
    RefineConfig,
    _check_perceptual,
    check_inputs,
    freeze_tune_resolutions,
    resolve_feature_resolution,
    tuned_parameter_names,
    tuning_config_dict,
)
from dhr.refinement.losses import target_maps_fn, whole_image_loss
from dhr.refinement.loop import (BlendedForward, LossLog, ProgressFn, Refined, adam, generator_feature,
                                 one_image_at_a_time, per_image_weights, set_grads, to_inversions)
from dhr.refinement.render import hybrid_forward, render_many
from dhr.types import NOISE_MODES, DeltaFormat, Inversion, RenderSpec

__all__ = ["PTIConfig", "refine_pti", "refine_feature", "embedding_only", "pti_loop", "feature_loop"]


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
        self.render_spec()  # checks noise_mode and delta_format
        freeze_tune_resolutions(self)

    def to_dict(self) -> dict:
        return tuning_config_dict(self)

    def render_spec(self) -> RenderSpec:
        """How PTI's results render and are stored."""
        return RenderSpec(noise_mode=self.noise_mode, delta_format=self.delta_format)


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

    def loop(i: slice, progress_i: ProgressFn | None) -> Refined:
        return pti_loop(G, target[i], ws[i], perceptual, config, names=names, progress=progress_i)

    refined = one_image_at_a_time(loop, target.shape[0], config.steps, progress, vectorize)
    return to_inversions(G, target, ws, refined, method="pti", spec=config.render_spec(), resolution=None,
                         feature_mask=None, domains=None, config={"pti": config.to_dict()})


def pti_loop(G: Generator, target: torch.Tensor, ws: torch.Tensor, perceptual, config: PTIConfig, *,
             names: Sequence[str], progress: ProgressFn | None = None) -> Refined:
    """Pivotal tuning of a batch, all images at once: θ follows the whole-image loss at the pivot w.

    Args:
        G: Generator (not modified).
        target: ``(B, 3, R, R)`` targets.
        ws: ``(B, num_ws, D)`` pivots.
        perceptual: LPIPS module with ``layer_maps``.
        config: Options.
        names: The tuned parameters θ.
        progress: Optional callback (stage ``pti``).

    Returns:
        θ* and the curve ``loss_in`` (whole image).
    """
    c = config
    theta = per_image_weights(G, names, target.shape[0])                    # θ ← θ_G
    opt_theta = adam(list(theta.values()), c.lr)
    lpips_maps = target_maps_fn(perceptual, target)                          # X's features, once
    log = LossLog(("loss_in",), stage="pti", steps=c.steps, progress=progress)
    for step in range(c.steps):
        image = hybrid_forward(G, theta, ws, noise_mode=c.noise_mode)          # G(w_p; θ)
        loss = whole_image_loss(image, target, lpips_maps(image), l2_weight=c.l2_weight,
                                lpips_weight=c.lpips_weight, l2_channel_sum=False)
        log.add(step, {"loss_in": loss})
        set_grads(loss, list(theta.values()))
        opt_theta.step()
    return log.result(theta, None, target.shape[0])


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

    def loop(i: slice, progress_i: ProgressFn | None) -> Refined:
        return feature_loop(G, target[i], ws[i], perceptual, config, resolution=r, progress=progress_i)

    refined = one_image_at_a_time(loop, target.shape[0], config.steps, progress, vectorize)
    spec = dataclasses.replace(config.render_spec(), freeze_ood_skip=False)  # no mask: nothing to freeze
    return to_inversions(G, target, ws, refined, method="feature", spec=spec, resolution=r, feature_mask=None,
                         domains=None, config={"feature": config.to_dict()})


def feature_loop(G: Generator, target: torch.Tensor, ws: torch.Tensor, perceptual, config: RefineConfig, *,
                 resolution: int, progress: ProgressFn | None = None) -> Refined:
    """Feature-only refinement of a batch, all images at once: f at block r replaces the generator's
    feature and follows the whole-image loss; the weights stay the generator's.

    Args:
        G: Generator (not modified).
        target: ``(B, 3, R, R)`` targets.
        ws: ``(B, num_ws, D)`` codes.
        perceptual: LPIPS module with ``layer_maps``.
        config: Options (``steps``, ``feature_lr``, the loss weights, ``l2_channel_sum``, ``noise_mode``).
        resolution: r.
        progress: Optional callback (stage ``feature``).

    Returns:
        f* and the curve ``loss_out`` (whole image).
    """
    c = config
    f = generator_feature(G, ws, resolution, c.noise_mode)                   # f ← f_l(w)
    opt_f = adam([f], c.feature_lr)
    generate = BlendedForward(G, ws, resolution, None, c.noise_mode)        # G(w, f): f everywhere
    lpips_maps = target_maps_fn(perceptual, target)                          # X's features, once
    log = LossLog(("loss_out",), stage="feature", steps=c.steps, progress=progress)
    for step in range(c.steps):
        image = generate({}, f, theta_final=True)
        loss = whole_image_loss(image, target, lpips_maps(image), l2_weight=c.l2_weight,
                                lpips_weight=c.lpips_weight, l2_channel_sum=c.l2_channel_sum)
        log.add(step, {"loss_out": loss})
        set_grads(loss, [f])
        opt_f.step()
    return log.result({}, f, target.shape[0])


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
    check_choice(noise_mode, NOISE_MODES, "noise_mode")
    ws = check_inputs(G, target, ws)
    invs = [
        Inversion(ws=ws[i].detach(), image=torch.zeros_like(target[i]), target=target[i].detach(), method=method,
                  losses=dict(losses[i]) if losses else {}, meta={"timings": {}},
                  render_spec=RenderSpec(noise_mode=noise_mode))
        for i in range(target.shape[0])
    ]
    images = render_many(G, invs)
    return [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(invs)]
