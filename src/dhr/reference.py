"""Parity runs: DHR in the reference preset on given aligned images and a given start code.

:func:`run_reference` drives DHR exactly as the authors' ``DHRInference`` does (reference
sections 1.1-1.6), so its outputs can be compared with that code on the same generator, the same
aligned inputs and the same start code. Instead of the e4e embedding it takes the start code
(``emb_codes``) directly: the generator's mean latent or a W+ tensor. It records what the
reference computes along the way: the coarse per-layer error maps, the superpixel labels and
scores, the parsing / superpixel / final masks and, per refinement iteration, the reference's own
loss terms (``MSE_in``, ``LPIPS_in``, ``MSE_out``, ``LPIPS_out`` and their sums).

The preset (:func:`reference_config`) is :class:`~dhr.config.InvertConfig` with the reference's
bugs that change masks restored (:meth:`SegmentConfig.reference`: BGR SLIC, truncating uint8
cast, NaN scores for lost superpixels) and the weight delta / feature stored in fp32. Randomness
is seeded per image (the reference is unseeded), so the coarse inversion matches the reference's
in distribution, not draw for draw; pass ``masks`` to compare the refinement alone.

Where the reference divides by zero (an image whose final mask has no in-domain or no
out-of-domain pixel, section 1.6.6) and returns an all-NaN image, the result carries a clear
``error`` and no image; the other images of the call are refined normally.

The *faithful loop* (:func:`faithful_coarse`, :func:`faithful_refine`) is the same algorithm written
as the authors' code runs it, one image at a time and nothing shared or skipped: a fresh copy of the
generator whose synthesis parameters are trained in place, ``loss_out.backward()`` into every
parameter and f, then ``loss_in.backward()`` into θ through the retained graph, the whole generator
forwarded every iteration, the target's LPIPS features recomputed every step. It is the parity oracle
and the speed baseline of the optimised path (:func:`dhr.refinement.hybrid.refine_dhr`,
:func:`dhr.embed.optimize.optimize_latent`; ``dhr bench-speed``, docs/performance.md): on the same
inputs both give the same losses up to float rounding.

Example:
    >>> from dhr.reference import run_reference
    >>> runs = run_reference(G, aligned, start="mean", coarse_perceptual=lpips_vgg, perceptual=lpips_alex)
    >>> runs[0].losses["lpips_out"][:3], runs[0].in_domain_fraction, runs[0].error
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dhr.bundle import as_stored
from dhr.config import InvertConfig
from dhr.embed.optimize import (OptimConfig, latent_noise_scale, latent_statistics, lr_at, noise_regularizer,
                                normalize_noise_)
from dhr.errors import ConfigError, ShapeError
from dhr.models.stylegan2 import SynthesisState
from dhr.refinement.hybrid import (RefineConfig, check_inputs, refine_dhr, resolve_feature_resolution,
                                   tuned_parameter_names)
from dhr.segmentation.domain import SegmentConfig
from dhr.types import DomainMask, Inversion

__all__ = ["ReferenceRun", "reference_config", "reference_start", "run_reference", "save_reference_run",
           "FaithfulCoarse", "FaithfulRefine", "faithful_coarse", "faithful_refine"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceRun:
    """One image's parity run.

    Attributes:
        start: ``(num_ws, D)`` the start code (the reference's ``emb_codes``).
        mask: ``(1, R, R)`` final mask m = m_s * m_p (1 = in-domain).
        in_domain_fraction: Mean of ``mask``.
        domain: The segmentation (masks m_s / m_p, SLIC labels ``superpixels (R, R)`` 1..S, scores
            ``(S,)``, coarse error maps ``(1, h_l, w_l)``, coarse image); only ``mask`` when a mask
            was given.
        inversion: The refined result (``image``, θ* - θ, f*, m_r, per-iteration ``losses``), or
            None when the mask was empty.
        losses: Per refinement iteration: ``l2_in``, ``lpips_in``, ``loss_in`` (the reference's face
            loss; it drives θ only in iterations ``< weight_steps``, recorded in ``theta_updated``),
            ``l2_out``, ``lpips_out``, ``loss_out`` (the background loss, drives f every iteration).
        error: Why the image was not refined (an empty region, where the reference returns NaN), or None.
    """

    start: torch.Tensor
    mask: torch.Tensor
    in_domain_fraction: float
    domain: DomainMask
    inversion: Inversion | None = None
    losses: dict[str, list] = field(default_factory=dict)
    error: str | None = None

    @property
    def image(self) -> torch.Tensor | None:
        """``(3, R, R)`` refined image, or None on error."""
        return None if self.inversion is None else self.inversion.image


def reference_config(**overrides) -> InvertConfig:
    """The reference preset: ``dhr.yaml`` values, reference segmentation bugs, exact storage.

    ``overrides`` replace top-level fields (e.g. ``refine=RefineConfig(steps=10, ...)``).
    """
    base = InvertConfig(
        method="dhr",
        coarse=OptimConfig.coarse(),
        segment=SegmentConfig.reference(),
        refine=RefineConfig(delta_format="fp32", feature_format="fp32"),
        coarse_perceptual="vgg",
    )
    return dataclasses.replace(base, **overrides)


def reference_start(G, start: str | Path | torch.Tensor, batch: int, *, seed: int = 0) -> torch.Tensor:
    """The start codes ``(B, num_ws, D)`` from ``start``.

    Args:
        G: The generator.
        start: ``"mean"`` (the generator's ``w_avg``, e.g. rosinality's ``latent_avg``, when it is
            non-zero, else the mean of 10,000 mapped samples drawn with ``seed``), a tensor ``(D,)``,
            ``(num_ws, D)`` or ``(B, num_ws, D)``, or a file holding one (``.pt`` read with
            ``weights_only=True``, ``.safetensors`` with one tensor, ``.npy``).
        batch: Number of images B.
        seed: Seed of the sampled mean.

    Raises:
        ConfigError: Unknown start or unreadable file.
        ShapeError: A code of the wrong shape.
    """
    num_ws, dim = G.num_ws, G.style_dim
    if isinstance(start, str) and start == "mean":
        w = getattr(G, "w_avg", None)
        if not (isinstance(w, torch.Tensor) and bool(w.abs().sum() > 0)):
            with torch.no_grad():
                w = latent_statistics(G, 10000, seed=seed)[0]
        codes = w.detach().float().cpu()
    elif isinstance(start, torch.Tensor):
        codes = start.detach().float().cpu()
    else:
        codes = _read_code(Path(start))
    if codes.ndim == 1:
        codes = codes[None]
    if codes.ndim == 2:
        if codes.shape[0] == 1:
            codes = codes.expand(num_ws, -1)
        codes = codes[None].expand(batch, -1, -1)
    if tuple(codes.shape) != (batch, num_ws, dim):
        raise ShapeError(f"start code has shape {list(codes.shape)}; expected (D,), (num_ws, D) or (B, num_ws, D) "
                         f"with D={dim}, num_ws={num_ws}, B={batch}")
    return codes.contiguous()


def _read_code(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise ConfigError(f"start: {path} is neither 'mean' nor an existing .pt/.safetensors/.npy file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise ConfigError(f"start: {path} holds {len(tensors)} tensors ({sorted(tensors)}); give a file "
                                  "with exactly one W+ tensor")
            return next(iter(tensors.values())).float()
        if path.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise ConfigError(f"start: {path} could not be read ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise ConfigError(f"start: {path} is a dict with {len(tensors)} tensors; give exactly one W+ tensor")
        obj = tensors[0]
    if not isinstance(obj, torch.Tensor):
        raise ConfigError(f"start: {path} holds a {type(obj).__name__}, not a tensor")
    return obj.float()


def _empty_region(mask: torch.Tensor) -> str | None:
    n = mask.numel()
    k = int(mask.sum())
    if k == 0:
        return (f"the final mask has no in-domain pixel (0 of {n}): the reference divides by zero in the face loss "
                "and returns an all-NaN image; not refined")
    if k == n:
        return (f"the final mask has no out-of-domain pixel ({n} of {n} in domain): the reference divides by zero "
                "in the background loss and returns an all-NaN image; not refined")
    return None


def run_reference(
    G,
    images: torch.Tensor,
    *,
    start: str | Path | torch.Tensor = "mean",
    perceptual: torch.nn.Module,
    coarse_perceptual: torch.nn.Module,
    masks: torch.Tensor | None = None,
    parsing: Sequence[object | None] | None = None,
    config: InvertConfig | None = None,
    keys: Sequence[str] | None = None,
) -> list[ReferenceRun]:
    """Runs DHR in the reference preset from a given start code, recording the reference's quantities.

    Args:
        G: The generator (never modified).
        images: ``(B, 3, R, R)`` aligned images in [-1, 1], R = ``G.resolution``.
        start: The start code (see :func:`reference_start`): ``"mean"``, a tensor or a file.
        perceptual: The refinement's LPIPS (the reference: LPIPS-Alex, spatial, full resolution).
        coarse_perceptual: The coarse inversion's and error maps' LPIPS (the reference: LPIPS-VGG).
        masks: Optional domain masks ``(B, 1, R, R)`` in {0, 1} (1 = in-domain); the coarse inversion
            and segmentation are then skipped. Empty ones are reported per image, not raised.
        parsing: Optional face parsing per image (the reference: FaRL), see :func:`dhr.segmentation.segment`.
        config: The preset; default :func:`reference_config`.
        keys: Per-image keys of the random streams (default: content hashes, :mod:`dhr.seeding`).

    Returns:
        One :class:`ReferenceRun` per image, in order.

    Raises:
        ShapeError: Wrong image or mask shapes, or non-binary masks.
        ConfigError: Bad start code or options.
    """
    from dhr.embed.optimize import optimize_latent
    from dhr.engine import _as_batch
    from dhr.segmentation.domain import segment
    from dhr.seeding import image_keys

    config = reference_config() if config is None else config
    target = _as_batch(G, images)
    b, R = target.shape[0], G.resolution
    p = next(G.parameters())
    target = target.to(p)
    ws = reference_start(G, start, b, seed=config.coarse.seed).to(p)
    check_inputs(G, target, ws)
    if parsing is not None and len(parsing) != b:
        raise ConfigError(f"parsing must hold one entry (or None) per image: {len(parsing)} for {b} images")
    keys = image_keys(target, keys)
    if masks is not None:
        m = masks if masks.ndim == 4 else masks[None]
        if tuple(m.shape) != (b, 1, R, R):
            raise ShapeError(f"masks must be (B, 1, R, R) = {[b, 1, R, R]}, got {list(m.shape)}")
        m = m.to(p)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ShapeError("masks must be binary (1 = in-domain, 0 = out-of-domain)")
        domains = [DomainMask(mask=m[i]) for i in range(b)]
    else:
        coarse, maps = optimize_latent(G, target, coarse_perceptual, config.coarse, keys=keys)
        domains = [segment(target[i], coarse[i].image, list(maps[i]),
                           parsing=None if parsing is None else parsing[i], config=config.segment)
                   for i in range(b)]
    errors = [_empty_region(d.mask) for d in domains]
    todo = [i for i in range(b) if errors[i] is None]
    refined: dict[int, Inversion] = {}
    if todo:
        mask = torch.stack([domains[i].mask for i in todo]).to(p)
        invs = as_stored(G, refine_dhr(G, target[todo], ws[todo], mask, perceptual, config.refine,
                                       domains=[domains[i] for i in todo], record_terms=True))
        refined = dict(zip(todo, invs))
    out = []
    ws_steps = config.refine.weight_steps
    for i in range(b):
        inv = refined.get(i)
        losses: dict[str, list] = {}
        if inv is not None:
            losses = {k: list(v) for k, v in inv.losses.items()}
            losses["theta_updated"] = [s < ws_steps for s in range(len(losses["loss_in"]))]
        if errors[i] is not None:
            logger.warning("reference run, image %d: %s", i, errors[i])
        out.append(ReferenceRun(start=ws[i].detach().cpu(), mask=domains[i].mask.detach().cpu(),
                                in_domain_fraction=float(domains[i].mask.float().mean()), domain=domains[i],
                                inversion=inv, losses=losses, error=errors[i]))
    return out


def save_reference_run(run: ReferenceRun, stem: str | Path) -> tuple[Path, Path]:
    """Writes ``<stem>.safetensors`` (start, mask, m_s, m_p, superpixels, scores, error maps, coarse,
    image, feature) and ``<stem>.json`` (per-iteration losses, in-domain fraction, error).

    Returns:
        The two paths.
    """
    import json

    from safetensors.torch import save_file

    d = run.domain
    tensors: dict[str, torch.Tensor] = {"start": run.start, "mask": run.mask}
    for name in ("mask_superpixel", "mask_parsing", "superpixels", "scores", "coarse"):
        t = getattr(d, name)
        if t is not None:
            tensors[name] = t
    for k, m in enumerate(d.error_maps):
        tensors[f"error_map_{k}"] = m
    if run.inversion is not None:
        tensors["image"] = run.inversion.image
        if run.inversion.feature is not None:
            tensors["feature"] = run.inversion.feature
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    st, js = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    save_file(tensors, str(st))
    js.write_text(json.dumps({"in_domain_fraction": run.in_domain_fraction, "error": run.error,
                              "losses": run.losses, "tensors": {k: list(v.shape) for k, v in tensors.items()}},
                             indent=2))
    return st, js


# --------------------------------------------------------------------------------------------
# The faithful loop: the oracle of the optimised path


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
