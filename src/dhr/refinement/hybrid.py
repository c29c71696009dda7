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
  B=1 ones up to float rounding, which Adam's normalised steps amplify).
- Empty regions (an all-in or all-out mask) contribute an exact 0 loss with zero gradient: the
  corresponding variables simply stay put (the reference produces NaN there).
- As in the reference the blend happens after the toRGB of block r, so the RGB skip up to r
  always comes from the (tuned) generator. ``RefineConfig.blend_rgb_skip`` leaves the
  optimisation unchanged (during refinement the inversion's own skip *is* that skip) and makes
  :func:`dhr.refinement.render.render` freeze the out-of-domain skip by default under edits.
- ``Inversion.image`` is rendered from the delta and feature *as stored* (after the configured
  quantisation round trip), so a saved and reloaded bundle renders the same image.

Notation: θ = tuned ``synthesis.*`` parameters, f = ``feature``, m = ``mask``, m_r = ``feature_mask``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dhr.bundle import DELTA_FORMATS, FEATURE_FORMATS, DeltaFormat, FeatureFormat, roundtrip_tensor, tensor_sha256
from dhr.checks import check_choice, check_non_negative, check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.models.stylegan2 import Generator
from dhr.refinement.losses import masked_l2, masked_lpips
from dhr.refinement.render import hybrid_forward, hybrid_prefix, hybrid_suffix, render_many

__all__ = [
    "RefineConfig",
    "ProgressFn",
    "refine_dhr",
    "valid_feature_resolutions",
    "resolve_feature_resolution",
    "tuned_parameter_names",
    "hybrid_losses",
    "hybrid_loss_terms",
    "target_maps_fn",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, dict], None]
"""``progress(stage, step, total, info)``: called after each optimisation step (info: mean losses)."""

_NOISE_MODES = ("const", "none")

_CACHE_PREFIX = True
"""Run the generator before the blend block once after θ freezes (False: every iteration; the
``fast-no-prefix-cache`` ablation of ``dhr bench-speed``). Results are the same either way."""

_FUSED_ADAM = False
"""Use Adam's fused kernel where the device has one (the ``fast-fused-adam`` path of ``dhr
bench-speed``). Off: the kernel's step is ~7x faster on CPU but rounds differently from the
per-tensor loop, and Adam's normalised steps carry that forward; over the reference's 100
iterations it moved faces-64's final in-domain loss by 7.7 % (docs/performance.md), over the 1 %
the fast path must stay within. With it off the fast path's losses equal the faithful loop's."""


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
        blend_rgb_skip: Record that renders should also freeze the out-of-domain RGB skip.
        delta_format: Storage format of the weight delta (see :mod:`dhr.bundle`); the final image
            is rendered from the delta as stored.
        feature_format: Storage format of f*.
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
        check_choice(self.noise_mode, _NOISE_MODES, "noise_mode")
        check_choice(self.delta_format, DELTA_FORMATS, "delta_format")
        check_choice(self.feature_format, FEATURE_FORMATS, "feature_format")
        freeze_tune_resolutions(self)

    def to_dict(self) -> dict:
        return tuning_config_dict(self)


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
        l2_weight, lpips_weight, l2_channel_sum: See :class:`RefineConfig`.

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


def adam(params: Sequence[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with default betas; its fused kernel where the device has one when :data:`_FUSED_ADAM`
    is set (the same update in one pass per tensor, ~7x faster than the per-tensor loop on CPU for the
    generator's weights, but not bit-identical)."""
    if not _FUSED_ADAM:
        return torch.optim.Adam(params, lr=lr)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.Adam(params, lr=lr)


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


@dataclass
class _Result:
    theta: dict[str, torch.Tensor]
    feature: torch.Tensor | None
    curves: list[dict[str, list[float]]]
    seconds: float


def optimize_hybrid(G: Generator, target: torch.Tensor, ws: torch.Tensor, perceptual, *,
                    mask: torch.Tensor, soft_mask: torch.Tensor, theta_names: Sequence[str],
                    resolution: int | None, blend: bool, steps: int, weight_steps: int,
                    feature_lr: float, weight_lr: float, l2_weight: float, lpips_weight: float,
                    l2_channel_sum: bool, noise_mode: str, stage: str,
                    progress: ProgressFn | None = None, vectorize: bool = False,
                    record_terms: bool = False) -> _Result:
    """Shared optimisation loop of DHR, PTI and feature-only refinement (internal).

    θ (stacked per image, ``theta_names``) follows ``loss_in``; f (if ``resolution``) follows
    ``loss_out``. ``blend=False`` with a feature makes f replace the generator's feature everywhere.
    ``record_terms`` adds the unweighted terms (:func:`hybrid_loss_terms`) to the curves.
    ``vectorize=False`` (default) optimises the images one after the other, so each image's result
    is bit-identical to its B=1 run whatever the batch; True runs them together through ``vmap``
    (equal only to float rounding, which Adam's normalisation amplifies over the steps).
    """
    b = target.shape[0]
    kwargs = dict(theta_names=theta_names, resolution=resolution, blend=blend, steps=steps,
                  weight_steps=weight_steps, feature_lr=feature_lr, weight_lr=weight_lr, l2_weight=l2_weight,
                  lpips_weight=lpips_weight, l2_channel_sum=l2_channel_sum, noise_mode=noise_mode, stage=stage,
                  vectorize=True, record_terms=record_terms)
    if not vectorize and b > 1:
        parts = []
        for i in range(b):
            def each(st, step, total, info, _i=i):
                progress(st, _i * steps + step, b * steps, info)

            parts.append(optimize_hybrid(G, target[i:i + 1], ws[i:i + 1], perceptual, mask=mask[i:i + 1],
                                         soft_mask=soft_mask[i:i + 1], progress=None if progress is None else each,
                                         **kwargs))
        return _Result({k: torch.cat([r.theta[k] for r in parts]) for k in parts[0].theta},
                       None if parts[0].feature is None else torch.cat([r.feature for r in parts]),
                       [c for r in parts for c in r.curves], sum(r.seconds for r in parts))
    params = dict(G.named_parameters())
    theta = {n: params[n].detach()[None].repeat(b, *([1] * params[n].ndim)).clone().requires_grad_(True)
             for n in theta_names}
    feature = None
    feature_mask = soft_mask if blend else None
    if resolution is not None:
        with torch.no_grad():
            feature = G.run_until(ws, resolution, noise_mode=noise_mode).features.detach().clone()
        feature.requires_grad_(True)
    opt_f = adam([feature], lr=feature_lr) if feature is not None else None
    opt_t = adam(list(theta.values()), lr=weight_lr) if theta else None
    names = ("loss_in", "loss_out") + (("l2_in", "lpips_in", "l2_out", "lpips_out") if record_terms else ())
    maps_of = target_maps_fn(perceptual, target)
    history: list[torch.Tensor] = []  # per step (B, len(names)); read back once after the loop (no sync per step)
    frozen: dict[str, torch.Tensor] | None = None
    prefix = None
    t0 = time.perf_counter()
    for step in range(steps):
        update_theta = opt_t is not None and step < weight_steps
        update_f = opt_f is not None
        if update_theta:
            image = hybrid_forward(G, theta, ws, feature=feature, feature_mask=feature_mask,
                                   resolution=resolution, noise_mode=noise_mode)
        else:
            if frozen is None:  # θ is final from here on
                frozen = {k: v.detach() for k, v in theta.items()}
            if feature is not None and _CACHE_PREFIX:
                # The generator before the blend block no longer changes: run it once, then only the suffix.
                if prefix is None:
                    prefix = hybrid_prefix(G, frozen, ws, resolution, noise_mode=noise_mode)
                image = hybrid_suffix(G, frozen, ws, prefix, feature=feature, feature_mask=feature_mask,
                                      noise_mode=noise_mode)
            else:
                image = hybrid_forward(G, frozen, ws, feature=feature, feature_mask=feature_mask,
                                       resolution=resolution, noise_mode=noise_mode)
        terms = hybrid_loss_terms(image, target, perceptual, mask=mask, soft_mask=soft_mask,
                                  l2_channel_sum=l2_channel_sum, maps=maps_of(image))
        loss_in = l2_weight * terms["l2_in"] + lpips_weight * terms["lpips_in"]
        loss_out = l2_weight * terms["l2_out"] + lpips_weight * terms["lpips_out"]
        values = {"loss_in": loss_in, "loss_out": loss_out, **terms}
        history.append(torch.stack([values[n].detach() for n in names], dim=1))
        if update_f:
            (g_f,) = torch.autograd.grad(loss_out.sum(), [feature], retain_graph=update_theta, allow_unused=True)
            feature.grad = torch.zeros_like(feature) if g_f is None else g_f.contiguous()
        if update_theta:
            tensors = list(theta.values())
            grads = torch.autograd.grad(loss_in.sum(), tensors, allow_unused=True)
            for t, g in zip(tensors, grads):
                # the fused Adam kernel reads the gradient with the parameter's strides (vmap may give others)
                t.grad = torch.zeros_like(t) if g is None else g.contiguous()
        # Jacobi update: both gradients were taken at the same pre-update forward.
        if update_f:
            opt_f.step()
        if update_theta:
            opt_t.step()
        if progress is not None:
            progress(stage, step + 1, steps, {"loss_in": float(loss_in.detach().mean()),
                                              "loss_out": float(loss_out.detach().mean())})
    curves: list[dict[str, list[float]]] = [{n: [] for n in names} for _ in range(b)]
    if history:
        table = torch.stack(history, dim=1).cpu().tolist()  # (B, steps, len(names))
        for i in range(b):
            for j, n in enumerate(names):
                curves[i][n] = [row[j] for row in table[i]]
    return _Result({k: v.detach() for k, v in theta.items()},
                   None if feature is None else feature.detach(), curves, time.perf_counter() - t0)


def finalize(G: Generator, target: torch.Tensor, ws: torch.Tensor, result: _Result, *, method: str,
             resolution: int | None, feature_mask: torch.Tensor | None, domains: Sequence | None,
             delta_format: str, feature_format: str, noise_mode: str, freeze_ood_skip: bool,
             config: dict, extra_meta: dict | None = None) -> list:
    """Builds one :class:`Inversion` per image, rendering the image from the stored (round-tripped) tensors."""
    from dhr.types import Inversion

    params = dict(G.named_parameters())
    out = []
    for i in range(target.shape[0]):
        delta = {}
        for n, t in result.theta.items():
            d = roundtrip_tensor(t[i] - params[n].detach(), delta_format)
            if bool((d != 0).any()):
                delta[n] = d
        feat = None if result.feature is None else roundtrip_tensor(result.feature[i], feature_format)
        meta = {
            "config": config,
            "noise_mode": noise_mode,
            "freeze_ood_skip": freeze_ood_skip,
            "delta_format": delta_format,
            "feature_format": feature_format,
            "input_sha256": tensor_sha256(target[i]),
            "timings": {"refine_s": result.seconds / target.shape[0], "refine_batch_s": result.seconds,
                        "batch_size": target.shape[0]},
        }
        meta.update(extra_meta or {})
        inv = Inversion(
            ws=ws[i].detach(),
            image=torch.zeros_like(target[i]),
            target=target[i].detach(),
            method=method,
            weight_delta=delta,
            feature=feat,
            feature_resolution=resolution if feat is not None else None,
            feature_mask=None if feature_mask is None else feature_mask[i].detach(),
            domain=None if domains is None else domains[i],
            losses=result.curves[i],
            meta=meta,
        )
        out.append(inv)
    images = render_many(G, out)
    return [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(out)]


def refine_dhr(G: Generator, target: torch.Tensor, ws: torch.Tensor, mask: torch.Tensor, perceptual,
               config: RefineConfig | None = None, *, domains: Sequence | None = None,
               progress: ProgressFn | None = None, vectorize: bool = False, record_terms: bool = False) -> list:
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
        One :class:`~dhr.types.Inversion` per image (method ``dhr``).

    Raises:
        ShapeError: Wrong target/ws/mask shapes or a non-binary mask.
        ConfigError: Invalid feature resolution or tune resolutions (before any optimisation).
    """
    from dhr.types import DomainMask

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
    result = optimize_hybrid(
        G, target, ws, perceptual, mask=mask, soft_mask=soft, theta_names=names, resolution=r, blend=True,
        steps=config.steps, weight_steps=config.weight_steps, feature_lr=config.feature_lr,
        weight_lr=config.weight_lr, l2_weight=config.l2_weight, lpips_weight=config.lpips_weight,
        l2_channel_sum=config.l2_channel_sum, noise_mode=config.noise_mode, stage="refine", progress=progress,
        vectorize=vectorize, record_terms=record_terms,
    )
    if domains is None:
        domains = [DomainMask(mask=mask[i].detach()) for i in range(target.shape[0])]
    return finalize(G, target, ws, result, method="dhr", resolution=r, feature_mask=soft, domains=domains,
                    delta_format=config.delta_format, feature_format=config.feature_format,
                    noise_mode=config.noise_mode, freeze_ood_skip=config.blend_rgb_skip,
                    config={"refine": config.to_dict()})
