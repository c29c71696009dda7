"""The *faithful loop* (:func:`faithful_coarse`, :func:`faithful_refine`): DHR's coarse inversion and
refinement written as the authors' code runs them, one image at a time and nothing shared or skipped: a fresh copy of the
generator whose synthesis parameters are trained in place, ``loss_out.backward()`` into every
parameter and f, then ``loss_in.backward()`` into θ through the retained graph, the whole generator
forwarded every iteration, the target's LPIPS features recomputed every step. It is the parity oracle
and the speed baseline of the optimised path (:func:`dhr.refinement.hybrid.refine_dhr`,
:func:`dhr.embed.optimize.optimize_latent`; ``dhr bench-speed``, docs/performance.md): on the same
inputs both give the same losses up to float rounding.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dhr.embed.optimize import (OptimConfig, latent_noise_scale, latent_statistics, lr_at, noise_regularizer,
                                normalize_noise_)
from dhr.errors import ConfigError, ShapeError
from dhr.models.stylegan2 import SynthesisState
from dhr.refinement.hybrid import RefineConfig, check_inputs, resolve_feature_resolution, tuned_parameter_names

__all__ = ["FaithfulCoarse", "FaithfulRefine", "faithful_coarse", "faithful_refine"]


@dataclass(frozen=True)
class FaithfulCoarse:
    """Result of :func:`faithful_coarse` for one image.

    Attributes:
        ws: ``(num_ws, D)`` the final code (W broadcast to every layer unless ``w_plus``).
        image: ``(3, R, R)`` G(ws) with the optimised noise maps, unclamped.
        error_maps: Per-layer LPIPS maps ``(1, h_l, w_l)`` of the last step (full resolution).
        losses: Per step ``lpips``, ``noise_reg``, ``total``.
        seconds: Wall time of the loop.
    """

    ws: torch.Tensor
    image: torch.Tensor
    error_maps: tuple[torch.Tensor, ...]
    losses: dict[str, list[float]]
    seconds: float


@dataclass(frozen=True)
class FaithfulRefine:
    """Result of :func:`faithful_refine` for one image.

    Attributes:
        image: ``(3, R, R)`` the final forward with θ*, f* and the mask (fp32, not quantised).
        weight_delta: θ* - θ per tuned parameter name.
        feature: ``(C, r, r)`` f*.
        losses: Per iteration ``l2_in``, ``lpips_in``, ``loss_in``, ``l2_out``, ``lpips_out``, ``loss_out``.
        seconds: Wall time of the loop.
    """

    image: torch.Tensor
    weight_delta: dict[str, torch.Tensor]
    feature: torch.Tensor
    losses: dict[str, list[float]]
    seconds: float


def faithful_coarse(G, target: torch.Tensor, perceptual: torch.nn.Module, config: OptimConfig | None = None, *,
                    key: str | None = None) -> FaithfulCoarse:
    """The coarse inversion of one image as the reference runs it (section 1.1), plainly.

    Draws the same random numbers as :func:`dhr.embed.optimize.optimize_latent` (stream seeded from
    ``config.seed`` and the image key), so the two agree up to float rounding. Every step recomputes
    the target's LPIPS features; the latent statistics are computed here (the reference computes
    them once per process).

    Args:
        G: The generator (not modified).
        target: ``(1, 3, R, R)`` or ``(3, R, R)`` aligned image in [-1, 1].
        perceptual: LPIPS-like module (``__call__`` and ``layer_maps``); the reference's is VGG.
        config: Options (default :meth:`OptimConfig.coarse`); ``init`` must be ``mean`` or ``w_avg``.
        key: The image's random-stream key (default its content key, :func:`dhr.seeding.image_key`).

    Returns:
        A :class:`FaithfulCoarse`.

    Raises:
        ShapeError: ``target`` of the wrong shape.
        ConfigError: ``init='given'`` (the faithful loop starts where the reference does).
    """
    from dhr.seeding import image_generator, image_key

    config = OptimConfig.coarse() if config is None else config
    if config.init == "given":
        raise ConfigError("faithful_coarse starts from the mean latent or w_avg; init='given' is not supported")
    target = target[None] if target.ndim == 3 else target
    R = G.resolution
    if tuple(target.shape) != (1, 3, R, R):
        raise ShapeError(f"target must be (1, 3, {R}, {R}) for this generator, got {list(target.shape)}")
    key = image_key(target[0]) if key is None else key
    p = next(G.parameters())
    target = target.to(p)
    t0 = time.perf_counter()
    flags = [(q, q.requires_grad) for q in G.parameters()]
    G.requires_grad_(False)
    try:
        with torch.no_grad():
            mean, std = latent_statistics(G, config.n_mean_samples, seed=config.seed)
        w = mean if config.init == "mean" else G.w_avg.detach()
        latent = w[None].clone() if not config.w_plus else w[None, None].repeat(1, G.num_ws, 1)
        latent = latent.to(p).requires_grad_(True)
        gen = image_generator(config.seed, key)
        noises = []
        if config.optimize_noise:
            for layer in G.synthesis.noise_layers():
                noises.append(torch.randn(tuple(layer.noise_const.shape[1:]), generator=gen)[None].to(p)
                              .requires_grad_(True))
        else:
            noises = [layer.noise_const.detach() for layer in G.synthesis.noise_layers()]
        opt = torch.optim.Adam([latent] + (noises if config.optimize_noise else []), lr=config.lr)
        low = min(config.loss_resolution, R)
        target_low = target if low == R else F.interpolate(target, size=(low, low), mode="bilinear",
                                                           align_corners=False, antialias=True)
        losses: dict[str, list[float]] = {"lpips": [], "noise_reg": [], "total": []}
        maps: list[torch.Tensor] = []
        for step in range(config.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, config)
            scale = latent_noise_scale(step, config, std)
            latent_n = latent
            if scale > 0:
                latent_n = latent + torch.randn(latent.shape[1:], generator=gen)[None].to(p) * scale
            img = G(latent_n, noise=noises)
            if step == config.steps - 1 and config.return_error_maps:
                maps = perceptual.layer_maps(img, target)  # the reference keeps the graph here (memory only)
            img_low = img.clamp(-1, 1)
            if low != R:
                img_low = F.interpolate(img_low, size=(low, low), mode="bilinear", align_corners=False)
            p_loss = perceptual(img_low, target_low).reshape(())
            mse = (img_low - target_low).square().mean()
            n_loss = noise_regularizer(noises).reshape(()) if config.optimize_noise else torch.zeros_like(mse)
            loss = config.lpips_weight * p_loss + config.noise_regularize * n_loss + config.l2_weight * mse
            opt.zero_grad()
            loss.backward()
            opt.step()
            if config.optimize_noise:
                normalize_noise_(noises)
            losses["lpips"].append(float(p_loss.detach()))
            losses["noise_reg"].append(float(n_loss.detach()))
            losses["total"].append(float(loss.detach()))
        with torch.no_grad():
            image = G(latent.detach(), noise=[n.detach() for n in noises])[0]
    finally:
        for q, flag in flags:
            q.requires_grad_(flag)
    ws = latent.detach()[0]
    if ws.ndim == 1:
        ws = ws[None].expand(G.num_ws, -1)
    return FaithfulCoarse(ws=ws.clone(), image=image, error_maps=tuple(m.detach()[0] for m in maps),
                          losses=losses, seconds=time.perf_counter() - t0)


def faithful_refine(G, target: torch.Tensor, ws: torch.Tensor, mask: torch.Tensor, perceptual: torch.nn.Module,
                    config: RefineConfig | None = None) -> FaithfulRefine:
    """Hybrid Modulation Refinement of one image as the authors' code runs it (section 1.6), plainly.

    A deep copy of ``G`` is trained in place: its tuned synthesis parameters and f are leaf tensors
    with two Adam optimisers. Each iteration forwards the whole generator with the blend
    ``f_l * m_r + f * (1 - m_r)`` after block r, computes LPIPS against the target from scratch,
    calls ``loss_out.backward(retain_graph=True)`` (gradients reach f *and* every θ, as in the
    reference, where the θ part is then discarded) and, while θ is tuned, ``loss_in.backward()``
    into θ. f keeps only its ``loss_out`` gradient; both optimisers step after both backwards (the
    reference's Jacobi update). Empty regions contribute 0, not NaN.

    Args:
        G: The generator (not modified).
        target: ``(1, 3, R, R)`` aligned image in [-1, 1].
        ws: ``(1, num_ws, D)`` W+ code.
        mask: ``(1, 1, R, R)`` binary domain mask, 1 = in-domain.
        perceptual: LPIPS-like module with ``layer_maps`` (the reference: AlexNet, full resolution).
        config: Options (default :class:`RefineConfig`); the storage formats are ignored.

    Returns:
        A :class:`FaithfulRefine`.

    Raises:
        ShapeError: Inputs of the wrong shape.
        ConfigError: Invalid feature or tune resolutions.
    """
    config = RefineConfig() if config is None else config
    ws = check_inputs(G, target, ws)
    R = G.resolution
    if target.shape[0] != 1 or tuple(mask.shape) != (1, 1, R, R):
        raise ShapeError(f"faithful_refine takes one image: target (1, 3, R, R), mask (1, 1, R, R); got "
                         f"{list(target.shape)} and {list(mask.shape)}")
    r = resolve_feature_resolution(G, config.feature_resolution)
    names = tuned_parameter_names(G, config.tune, config.tune_resolutions)
    t0 = time.perf_counter()
    Gc = copy.deepcopy(G)
    Gc.requires_grad_(False)
    params = dict(Gc.named_parameters())
    theta = [params[n].requires_grad_(True) for n in names]
    p = next(Gc.parameters())
    target, ws, mask = target.to(p), ws.to(p), mask.to(p)
    soft = F.adaptive_avg_pool2d(mask, r)
    nm = config.noise_mode
    with torch.no_grad():
        f = Gc.run_until(ws, r, noise_mode=nm).features.clone()
    f.requires_grad_(True)
    opt_f = torch.optim.Adam([f], lr=config.feature_lr)
    opt_t = torch.optim.Adam(theta, lr=config.weight_lr) if theta else None
    keys = ("l2_in", "lpips_in", "loss_in", "l2_out", "lpips_out", "loss_out")
    losses: dict[str, list[float]] = {k: [] for k in keys}

    def region_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (x * m).sum() / m.sum().clamp_min(1e-12)  # an empty region: 0 / tiny = 0

    def forward() -> torch.Tensor:
        state = Gc.run_until(ws, r, noise_mode=nm)
        blended = state.features * soft + f * (1 - soft)
        return Gc.run_from(ws, SynthesisState(blended, state.rgb, r), noise_mode=nm)

    for step in range(config.steps):
        update_theta = opt_t is not None and step < config.weight_steps
        image = forward()
        maps = perceptual.layer_maps(image, target)
        se = (image - target).square().sum(dim=1, keepdim=True)
        if not config.l2_channel_sum:
            se = se / 3
        terms = {"l2_in": region_mean(se, mask), "l2_out": region_mean(se, 1 - mask)}
        terms["lpips_in"] = sum(region_mean(m, F.interpolate(soft, size=m.shape[-2:], mode="nearest")) for m in maps)
        terms["lpips_out"] = sum(region_mean(m, F.interpolate(1 - soft, size=m.shape[-2:], mode="nearest"))
                                 for m in maps)
        loss_in = config.l2_weight * terms["l2_in"] + config.lpips_weight * terms["lpips_in"]
        loss_out = config.l2_weight * terms["l2_out"] + config.lpips_weight * terms["lpips_out"]
        opt_f.zero_grad()
        if opt_t is not None:
            opt_t.zero_grad()
        loss_out.backward(retain_graph=update_theta)
        grad_f = f.grad.clone()
        if update_theta:
            opt_t.zero_grad()  # discards the θ gradients of loss_out, as the reference does
            loss_in.backward()
            f.grad = grad_f  # f follows loss_out only
        opt_f.step()
        if update_theta:
            opt_t.step()
        for k, v in (("loss_in", loss_in), ("loss_out", loss_out), *terms.items()):
            losses[k].append(float(v.detach()))
    with torch.no_grad():
        image = forward()[0]
    base = dict(G.named_parameters())
    delta = {n: (params[n].detach() - base[n].detach()) for n in names}
    return FaithfulRefine(image=image, weight_delta=delta, feature=f.detach()[0], losses=losses,
                          seconds=time.perf_counter() - t0)
