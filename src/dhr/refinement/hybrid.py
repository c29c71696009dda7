"""Hybrid Modulation Refinement (paper section 3.4, eqs. 3-7; reference section 1.6).

Given the W+ code w, the binary domain mask m (1 = in-domain) and the target X, DHR optimises

- the generator weights θ on the in-domain loss ``L ⊙ m / ||m||`` (eq. 7), and
- a feature f at resolution r on the out-of-domain loss ``L ⊙ (1 - m) / ||1 - m||`` (eq. 6),

with the forward ``f' = f_l ⊙ m_r + f ⊙ (1 - m_r)`` (eq. 4) where f_l = ``run_until(w, r)`` under θ
and m_r = adaptive-average-pooled m (soft). Both losses come from one forward; the gradients are
taken at the same pre-update point (Jacobi / simultaneous update, as the reference) and applied
by two Adam optimisers. θ is updated only during the first ``weight_steps`` iterations.

Implementation notes:

- θ is never written into the generator: per-image copies are substituted with
  :func:`torch.func.functional_call`. By default the images of a batch are refined one after the
  other, so each result is bit-identical to its B=1 run; with ``vectorize=True`` the batch runs
  through :func:`torch.func.vmap` over stacked copies (Adam is element-wise, so results equal the
  B=1 ones up to float rounding, which Adam's normalised steps amplify). The pieces the loop
  shares with the baselines (prefix caching once θ is final, curves without per-step syncs) are
  in :mod:`dhr.refinement.loop`.
- Empty regions (an all-in or all-out mask) contribute an exact 0 loss with zero gradient: the
  corresponding variables simply stay put (the reference produces NaN there).
- As in the reference the blend happens after the toRGB of block r, so the RGB skip up to r
  always comes from the (tuned) generator. ``RefineConfig.blend_rgb_skip`` leaves the
  optimisation unchanged (during refinement the inversion's own skip *is* that skip) and makes
  :func:`dhr.refinement.render.render` freeze the out-of-domain skip by default under edits
  (``RenderSpec.freeze_ood_skip``).
- The result holds θ* and f* exactly; ``delta_format`` / ``feature_format`` are recorded in its
  :class:`~dhr.types.RenderSpec` and applied by :func:`dhr.bundle.as_stored` (which
  :func:`dhr.invert` calls), so a saved and reloaded bundle renders the stored result's image.

Notation: θ = tuned ``synthesis.*`` parameters, f = ``feature``, m = ``mask``, m_r = ``feature_mask``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dhr.checks import check_choice, check_non_negative, check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.models.stylegan2 import Generator
from dhr.refinement.losses import hybrid_loss_terms, hybrid_losses, target_maps_fn
from dhr.refinement.loop import (BlendedForward, LossLog, ProgressFn, Refined, adam, generator_feature,
                                 one_image_at_a_time, per_image_weights, set_grads, to_inversions)
from dhr.types import DeltaFormat, DomainMask, FeatureFormat, Inversion, RenderSpec

__all__ = [
    "RefineConfig",
    "ProgressFn",
    "refine_dhr",
    "dhr_loop",
    "valid_feature_resolutions",
    "resolve_feature_resolution",
    "tuned_parameter_names",
    "check_inputs",
    "hybrid_losses",  # re-exported from dhr.refinement.losses
    "hybrid_loss_terms",
    "target_maps_fn",
]

_TERMS = ("l2_in", "lpips_in", "l2_out", "lpips_out")


@dataclass(frozen=True)
class RefineConfig:
    """Options of Hybrid Modulation Refinement (defaults: the reference ``dhr.yaml``).

    Attributes:
        feature_resolution: r, the block whose output feature f is optimised. None means
            ``resolution // 8`` (128 for a 1024 generator, the reference's ``feature_idx=11``),
            clamped into the valid blocks and to at least 8 when the generator allows it (tiny
            generators: 32 px -> 8). An int must be a block below the output resolution.
        steps: Total iterations; f is updated every iteration.
        weight_steps: θ is updated only in iterations ``0 .. weight_steps - 1``.
        feature_lr: Adam learning rate of f.
        weight_lr: Adam learning rate of θ.
        l2_weight: Weight of the masked L2 term.
        lpips_weight: Weight of the masked LPIPS term (λ of eq. 5).
        l2_channel_sum: Reference L2 (channel-summed numerator / pixel count = 3x the mean).
        tune: ``synthesis``: every synthesis parameter (const, conv weights, affines, noise
            strengths, biases, toRGB) or ``none`` (ablation: no weight modulation). The mapping
            network is never tuned.
        tune_resolutions: Restrict tuning to the blocks at these resolutions (None: all).
        noise_mode: Per-pixel noise of the generator: ``const`` (fixed buffers) or ``none``.
        blend_rgb_skip: Record that renders should also freeze the out-of-domain RGB skip
            (``RenderSpec.freeze_ood_skip``).
        delta_format: Storage format of the weight delta (``RenderSpec.delta_format``; see
            :mod:`dhr.bundle.codec`).
        feature_format: Storage format of f* (``RenderSpec.feature_format``).
    """

    feature_resolution: int | None = None
    steps: int = 100
    weight_steps: int = 50
    feature_lr: float = 0.09
    weight_lr: float = 1.5e-3
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    l2_channel_sum: bool = True
    tune: Literal["synthesis", "none"] = "synthesis"
    tune_resolutions: tuple[int, ...] | None = None
    noise_mode: Literal["const", "none"] = "const"
    blend_rgb_skip: bool = False
    delta_format: DeltaFormat = "fp16"
    feature_format: FeatureFormat = "fp16"

    def __post_init__(self) -> None:
        if self.feature_resolution is not None and (
            not isinstance(self.feature_resolution, int) or self.feature_resolution < 4
            or self.feature_resolution & (self.feature_resolution - 1)
        ):
            raise ConfigError(f"feature_resolution={self.feature_resolution!r} must be None or a power of two >= 4")
        if self.steps < 0 or self.weight_steps < 0:
            raise ConfigError(f"steps={self.steps} and weight_steps={self.weight_steps} must be >= 0")
        check_non_negative(self, ("feature_lr", "weight_lr", "l2_weight", "lpips_weight"))
        check_choice(self.tune, ("synthesis", "none"), "tune")
        self.render_spec()  # checks noise_mode and the storage formats
        freeze_tune_resolutions(self)

    def to_dict(self) -> dict:
        return tuning_config_dict(self)

    def render_spec(self) -> RenderSpec:
        """How DHR's results render and are stored."""
        return RenderSpec(noise_mode=self.noise_mode, freeze_ood_skip=self.blend_rgb_skip,
                          delta_format=self.delta_format, feature_format=self.feature_format)


def freeze_tune_resolutions(config: object) -> None:
    """Stores a config's ``tune_resolutions`` (any sequence or None) as a tuple of ints."""
    if config.tune_resolutions is not None:
        object.__setattr__(config, "tune_resolutions", tuple(int(r) for r in config.tune_resolutions))


def tuning_config_dict(config: object) -> dict:
    """A weight-tuning config as plain JSON types (``tune_resolutions`` as a list)."""
    d = dataclasses.asdict(config)
    if d["tune_resolutions"] is not None:
        d["tune_resolutions"] = list(d["tune_resolutions"])
    return d


def valid_feature_resolutions(G: Generator) -> list[int]:
    """Blocks whose output feature can be optimised: every block below the output resolution."""
    return [r for r in G.synthesis.resolutions if r < G.resolution]


def resolve_feature_resolution(G: Generator, requested: int | None) -> int:
    """The feature resolution r for ``G`` (see :attr:`RefineConfig.feature_resolution`).

    Raises:
        ConfigError: ``requested`` is not a valid block; the message lists the valid ones.
    """
    valid = valid_feature_resolutions(G)
    if requested is None:
        r = max(G.resolution // 8, min(8, valid[-1]))
        return min(r, valid[-1])
    if requested not in valid:
        raise ConfigError(
            f"feature_resolution={requested} is not a block of this {G.resolution}px generator before its output; "
            f"valid: {valid}"
        )
    return requested


def tuned_parameter_names(G: Generator, tune: str = "synthesis", resolutions: Sequence[int] | None = None) -> list[str]:
    """Names (as in ``G.state_dict()``) of the synthesis parameters tuned by weight modulation."""
    if tune == "none":
        return []
    check_choice(tune, ("synthesis",), "tune")
    names = [n for n, _ in G.named_parameters() if n.startswith("synthesis.")]
    if resolutions is not None:
        blocks = G.synthesis.resolutions
        bad = [r for r in resolutions if r not in blocks]
        if bad:
            raise ConfigError(f"tune_resolutions {bad} are not blocks of this generator; blocks: {blocks}")
        prefixes = tuple(f"synthesis.b{r}." for r in resolutions)
        names = [n for n in names if n.startswith(prefixes)]
    return names


def _check_perceptual(perceptual) -> None:
    if not callable(getattr(perceptual, "layer_maps", None)):
        raise ConfigError(
            f"perceptual must provide layer_maps(x, y) -> list of (B,1,h,w) maps (e.g. dhr.metrics.lpips.LPIPS), "
            f"got {type(perceptual).__name__}"
        )


def check_inputs(G: Generator, target: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Validates ``target (B,3,R,R)`` and ``ws (B,num_ws,D)`` (or ``(B,D)``, broadcast); returns W+."""
    R = G.resolution
    b = check_shape(target, ["B", "C", "H", "W"], "target")
    if b["C"] != 3:
        raise ShapeError(f"target must have 3 (RGB) channels, got {b['C']} (shape {list(target.shape)})")
    if b["H"] != R or b["W"] != R:
        raise ShapeError(f"target must be {R}x{R} for this generator, got {b['H']}x{b['W']}; resize/align it first")
    if not torch.isfinite(target).all():
        raise ShapeError("target contains NaN or inf values")
    if ws.ndim == 2:
        ws = ws[:, None].expand(-1, G.num_ws, -1)
    check_shape(ws, [b["B"], G.num_ws, G.style_dim], "ws")
    return ws


def refine_dhr(G: Generator, target: torch.Tensor, ws: torch.Tensor, mask: torch.Tensor, perceptual,
               config: RefineConfig | None = None, *, domains: Sequence | None = None,
               progress: ProgressFn | None = None, vectorize: bool = False,
               record_terms: bool = False) -> list[Inversion]:
    """Hybrid Modulation Refinement of a batch of images (each with its own θ* and f*).

    Args:
        G: Generator (not modified; its parameters supply θ).
        target: ``(B, 3, R, R)`` aligned targets X in [-1, 1].
        ws: ``(B, num_ws, D)`` W+ codes (kept fixed).
        mask: ``(B, 1, R, R)`` binary domain masks m, 1 = in-domain.
        perceptual: LPIPS module with ``layer_maps`` (the reference uses AlexNet at full resolution).
        config: Options; default :class:`RefineConfig()`.
        domains: Optional :class:`~dhr.types.DomainMask` per image to attach to the results
            (default: one holding ``mask``).
        progress: Optional ``progress(stage, step, total, info)`` callback.
        vectorize: Refine the batch together through ``vmap`` (faster on a GPU; results equal B=1
            runs only to float rounding, amplified by Adam). False (default): one image after the
            other, each bit-identical to its B=1 run.
        record_terms: Also record the unweighted loss terms per iteration (``l2_in``, ``lpips_in``,
            ``l2_out``, ``lpips_out``) in ``losses``.

    Returns:
        One :class:`~dhr.types.Inversion` per image (method ``dhr``), holding θ* - θ and f*
        exactly; its render spec records the storage formats (:func:`dhr.bundle.as_stored`).

    Raises:
        ShapeError: Wrong target/ws/mask shapes or a non-binary mask.
        ConfigError: Invalid feature resolution or tune resolutions (before any optimisation).
    """
    config = config or RefineConfig()
    ws = check_inputs(G, target, ws)
    check_shape(mask, [target.shape[0], 1, G.resolution, G.resolution], "mask")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ShapeError("mask must be binary (0 = out-of-domain, 1 = in-domain)")
    _check_perceptual(perceptual)
    r = resolve_feature_resolution(G, config.feature_resolution)
    names = tuned_parameter_names(G, config.tune, config.tune_resolutions)
    p = next(G.parameters())
    target, ws, mask = target.to(p), ws.to(p), mask.to(p)
    soft = F.adaptive_avg_pool2d(mask, r)

    def loop(i: slice, progress_i: ProgressFn | None) -> Refined:
        return dhr_loop(G, target[i], ws[i], mask[i], soft[i], perceptual, config, names=names, resolution=r,
                        progress=progress_i, record_terms=record_terms)

    refined = one_image_at_a_time(loop, target.shape[0], config.steps, progress, vectorize)
    if domains is None:
        domains = [DomainMask(mask=mask[i].detach()) for i in range(target.shape[0])]
    return to_inversions(G, target, ws, refined, method="dhr", spec=config.render_spec(), resolution=r,
                         feature_mask=soft, domains=domains, config={"refine": config.to_dict()})


def dhr_loop(G: Generator, target: torch.Tensor, ws: torch.Tensor, mask: torch.Tensor, soft_mask: torch.Tensor,
             perceptual, config: RefineConfig, *, names: Sequence[str], resolution: int,
             progress: ProgressFn | None = None, record_terms: bool = False) -> Refined:
    """Hybrid Modulation Refinement of a batch, all images at once (paper section 3.4).

    Args:
        G: Generator (not modified).
        target: ``(B, 3, R, R)`` targets X.
        ws: ``(B, num_ws, D)`` W+ codes w.
        mask: ``(B, 1, R, R)`` binary m.
        soft_mask: ``(B, 1, r, r)`` soft m_r.
        perceptual: LPIPS module with ``layer_maps``.
        config: Options.
        names: The tuned parameters θ.
        resolution: r.
        progress: Optional callback (stage ``refine``).
        record_terms: Also record the unweighted terms.

    Returns:
        θ*, f* and the curves ``loss_in``, ``loss_out`` (and the terms).
    """
    c = config
    theta = per_image_weights(G, names, target.shape[0])                   # θ ← θ_G
    f = generator_feature(G, ws, resolution, c.noise_mode)                   # f ← f_l(w)
    opt_theta = adam(list(theta.values()), c.weight_lr) if theta else None
    opt_f = adam([f], c.feature_lr)
    generate = BlendedForward(G, ws, resolution, soft_mask, c.noise_mode)   # eq. 4
    lpips_maps = target_maps_fn(perceptual, target)                          # X's features, once
    log = LossLog(("loss_in", "loss_out"), _TERMS if record_terms else (), stage="refine", steps=c.steps,
                  progress=progress)
    for step in range(c.steps):
        tune_theta = opt_theta is not None and step < c.weight_steps
        image = generate(theta, f, theta_final=not tune_theta)
        t = hybrid_loss_terms(image, target, perceptual, mask=mask, soft_mask=soft_mask,
                              l2_channel_sum=c.l2_channel_sum, maps=lpips_maps(image))
        loss_in = c.l2_weight * t["l2_in"] + c.lpips_weight * t["lpips_in"]      # eq. 7: drives θ
        loss_out = c.l2_weight * t["l2_out"] + c.lpips_weight * t["lpips_out"]   # eq. 6: drives f
        log.add(step, {"loss_in": loss_in, "loss_out": loss_out, **t})
        # Jacobi update: both gradients at the same forward, then both steps.
        set_grads(loss_out, [f], retain_graph=tune_theta)
        if tune_theta:
            set_grads(loss_in, list(theta.values()))
        opt_f.step()
        if tune_theta:
            opt_theta.step()
    return log.result(theta, f, target.shape[0])
