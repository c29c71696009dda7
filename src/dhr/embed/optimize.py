"""Latent optimisation: the coarse inversion of DHR and the plain optimisation baseline.

Reproduces ``OptimizerInference`` of the reference implementation (reference doc section 1.1 and
section 2 "Plain optimisation"), itself the rosinality ``projector.py`` recipe:

- one Adam over the latent (W: one ``(D,)`` vector per image broadcast to every layer; W+: ``(num_ws, D)``)
  and, optionally, every noise map of the synthesis;
- learning rate per step i (t = i / steps): ``lr0 * cosramp * min(1, t / lr_rampup)`` with
  ``cosramp = 0.5 - 0.5 cos(pi * min(1, (1 - t) / lr_rampdown))``;
- latent noise ``randn * latent_std * noise * max(0, 1 - t / noise_ramp) ** 2`` added to the latent before
  each forward, ``latent_std`` the RMS distance of mapped samples from their mean (one scalar);
- loss ``lpips_weight * P(G_low, x_low) + noise_regularize * R(noise) + l2_weight * MSE(G_low, x_low)``
  where ``G_low`` is the clamped generator output bilinearly resized to ``min(loss_resolution, R)``;
- noise maps renormalised to zero mean and unit (unbiased) std after every step;
- on the last step, before its update, the per-layer spatial error maps ``perceptual.layer_maps`` between
  the unclamped full-resolution output and the full-resolution target (DHR's superpixel scores use them).

Deviations from the reference, all deliberate: everything is seeded (``seed``; each image draws its
noise maps and latent noise from its own ``torch.Generator`` seeded with ``(seed, image key)``, the key a
content hash of the image or a caller-given id, never its position in the batch; see :mod:`dhr.seeding`;
the mapped-sample statistics use ``seed``), a photo's result does not depend on the batch (by default the
images of a batch are optimised one after the other, so each one runs exactly the B=1 computation;
``vectorize=True`` optimises them together, equal only to float rounding, which Adam amplifies), and the
error maps are computed without autograd.

Notation (paper -> code): w (coarse code) = ``Embedding.ws``; the coarse image G(w) = ``Embedding.image``;
the error maps feeding v_i = the second return value.

Size: about 510 lines, a third of them docstrings: one recipe (options, schedule, the mapped-sample
statistics it needs and their cache, the loop) that the faithful loop (:mod:`dhr.reference.faithful`)
reuses piece by piece, kept in one module so the pieces and the loop cannot drift apart.
"""

from __future__ import annotations

import contextlib
import weakref
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_choice, check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.seeding import image_generator, image_keys
from dhr.types import Embedding

__all__ = [
    "OptimConfig",
    "PerceptualLoss",
    "optimize_latent",
    "lr_at",
    "latent_noise_scale",
    "noise_regularizer",
    "normalize_noise_",
    "latent_statistics",
]

logger = logging.getLogger(__name__)

InitMode = Literal["mean", "w_avg", "given"]
_INIT_MODES = ("mean", "w_avg", "given")
ProgressFn = Callable[[int, int, dict[str, float]], None]


class PerceptualLoss(Protocol):
    """What :func:`optimize_latent` needs from a perceptual distance (``dhr.metrics.lpips.LPIPS`` fits).

    ``__call__(x, y)`` returns ``(B,)`` distances for ``(B, 3, H, W)`` images in [-1, 1];
    ``layer_maps(x, y)`` returns the unreduced per-layer maps ``(B, 1, h_l, w_l)``.
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class OptimConfig:
    """Options of :func:`optimize_latent` (defaults: DHR's coarse inversion, ``configs/dhr/dhr.yaml``).

    Attributes:
        steps: Number of Adam steps (``optim_step``; 40 for DHR, 1000 for the baseline).
        lr: Peak learning rate lr0.
        w_plus: Optimise one code per layer (W+) instead of one shared code (W).
        noise: Latent-noise strength relative to ``latent_std``.
        noise_ramp: Fraction of the run over which the latent noise decays (quadratically) to zero.
        noise_regularize: Weight of the noise-map autocorrelation regulariser.
        l2_weight: Weight of the MSE term at the loss resolution.
        lpips_weight: Weight of the perceptual term at the loss resolution.
        lr_rampup: Fraction of the run of the linear warm-up (step 0 has lr 0, as in the reference).
        lr_rampdown: Fraction of the run of the final cosine decay.
        optimize_noise: Optimise freshly drawn noise maps (reference). False uses the generator's fixed
            noise buffers, unoptimised and unregularised.
        loss_resolution: The loss is computed at ``min(loss_resolution, R)``: the clamped generator output
            is bilinearly resized (no antialias, as the reference), the target once with antialias (as the
            reference's PIL resize).
        init: Start point. ``mean``: mean of ``n_mean_samples`` mapped z drawn with ``seed`` (the
            reference's e4e/DHR case); ``w_avg``: the checkpoint's ``G.w_avg`` (the reference's plain
            optimisation); ``given``: the ``init_ws`` argument.
        n_mean_samples: Number of mapped samples for the mean latent and ``latent_std``.
        seed: Base seed of every random draw.
        return_error_maps: Compute the per-layer error maps on the last step.
    """

    steps: int = 40
    lr: float = 0.1
    w_plus: bool = False
    noise: float = 0.05
    noise_ramp: float = 0.75
    noise_regularize: float = 1e5
    l2_weight: float = 0.0
    lpips_weight: float = 1.0
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    optimize_noise: bool = True
    loss_resolution: int = 256
    init: InitMode = "mean"
    n_mean_samples: int = 10000
    seed: int = 0
    return_error_maps: bool = True

    def __post_init__(self) -> None:
        check_choice(self.init, _INIT_MODES, "init")
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")
        if self.lr < 0:
            raise ConfigError(f"lr={self.lr} must be >= 0")
        for name in ("noise", "noise_regularize", "l2_weight", "lpips_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("noise_ramp", "lr_rampup", "lr_rampdown"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if self.loss_resolution < 16:
            raise ConfigError(f"loss_resolution={self.loss_resolution} must be >= 16 (LPIPS needs 16 px)")
        if self.n_mean_samples < 2:
            raise ConfigError(f"n_mean_samples={self.n_mean_samples} must be >= 2")

    @classmethod
    def coarse(cls, **overrides) -> OptimConfig:
        """DHR's coarse inversion: 40 steps in W from the sampled mean latent, LPIPS only."""
        return replace(cls(), **overrides)

    @classmethod
    def baseline(cls, **overrides) -> OptimConfig:
        """The reference's plain optimisation baseline: 1000 steps in W+ from ``G.w_avg``."""
        return replace(cls(steps=1000, w_plus=True, init="w_avg"), **overrides)


# --------------------------------------------------------------------------------------------
# Pure functions of the recipe


def lr_at(step: int, config: OptimConfig) -> float:
    """Learning rate of ``step`` (0-based): ``lr0 * cosramp * min(1, t / lr_rampup)``, t = step / steps.

    With the coarse defaults (40 steps, lr 0.1) this is 0 at step 0, 0.05 at step 1, 0.1 for steps
    2..30 and decays to about 0.00245 at step 39.
    """
    t = step / config.steps
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return config.lr * ramp * min(1.0, t / config.lr_rampup)


def latent_noise_scale(step: int, config: OptimConfig, latent_std: float) -> float:
    """Std of the latent noise at ``step``: ``latent_std * noise * max(0, 1 - t / noise_ramp) ** 2``."""
    t = step / config.steps
    return latent_std * config.noise * max(0.0, 1.0 - t / config.noise_ramp) ** 2


def noise_regularizer(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image autocorrelation penalty of noise maps (rosinality ``noise_regularize``).

    For each map and each level of its 2x average-pooled pyramid down to 8x8 (maps of 8x8 or less
    contribute one level), adds ``mean(n * roll(n, 1, dim=3)) ** 2 + mean(n * roll(n, 1, dim=2)) ** 2``,
    the means taken per image.

    Args:
        noises: Maps ``(B, 1, r, r)``.

    Returns:
        ``(B,)`` penalty per image.
    """
    total = None
    for n in noises:
        size = n.shape[-1]
        while True:
            h = (n * torch.roll(n, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            v = (n * torch.roll(n, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            total = h + v if total is None else total + h + v
            if size <= 8:
                break
            n = F.avg_pool2d(n, 2)
            size //= 2
    if total is None:
        raise ShapeError("noise_regularizer needs at least one noise map")
    return total


@torch.no_grad()
def normalize_noise_(noises: Sequence[torch.Tensor]) -> None:
    """Renormalises each image's noise map in place to zero mean and unit (unbiased) std."""
    for n in noises:
        mean = n.mean(dim=(1, 2, 3), keepdim=True)
        std = n.std(dim=(1, 2, 3), keepdim=True)
        n.sub_(mean).div_(std)


@torch.no_grad()
def latent_statistics(G: nn.Module, n: int = 10000, *, seed: int = 0, chunk: int = 4096
                      ) -> tuple[torch.Tensor, float]:
    """Mean of ``n`` mapped latents and their RMS distance from it (the reference's ``latent_std``).

    z is drawn on the CPU with ``torch.Generator().manual_seed(seed)`` (device independent) and mapped
    on the generator's device in chunks.

    Args:
        G: Generator with ``mapping`` and ``style_dim``.
        n: Number of samples (10,000 in the reference).
        seed: Seed of the draw.
        chunk: Samples mapped at once.

    Returns:
        ``(mean (D,), std)`` with ``std = sqrt(sum_i ||w_i - mean||^2 / n)``.
    """
    p = next(G.parameters())
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=gen)
    with torch.autocast(p.device.type, enabled=False):  # a statistic of G, cached: never in reduced precision
        ws = torch.cat([G.mapping(z[i:i + chunk].to(p)) for i in range(0, n, chunk)])
    mean = ws.mean(0)
    std = float((ws - mean).square().sum(1).mean().sqrt())
    return mean, std


# --------------------------------------------------------------------------------------------
# Helpers

_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_statistics(G: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """:func:`latent_statistics`, remembered per generator (as the reference caches them per process).

    The cache entry is keyed by ``n``, ``seed``, device, dtype and the identity and in-place version
    counter of every mapping parameter, so a generator whose mapping changed (training, loading
    weights) gets fresh statistics.
    """
    mapping = getattr(G, "mapping", None)
    if not isinstance(mapping, nn.Module):
        return latent_statistics(G, n, seed=seed)
    p = next(G.parameters())
    key = (n, seed, p.device, p.dtype, tuple((id(q), q._version) for q in mapping.parameters()))
    hit = _STATS.get(G)
    if hit is not None and hit[0] == key:
        return hit[1]
    stats = latent_statistics(G, n, seed=seed)
    _STATS[G] = (key, stats)
    return stats


def _perceptual_to(perceptual: PerceptualLoss, target: torch.Tensor):
    """``x -> perceptual(x, target)`` ``(B,)``, with the target's features computed once when the network
    offers ``taps_of`` / ``layer_maps_from`` (same values)."""
    if callable(getattr(perceptual, "layer_maps_from", None)) and callable(getattr(perceptual, "taps_of", None)):
        with torch.no_grad():
            taps = [t.detach() for t in perceptual.taps_of(target)]
        return lambda x: sum(m.mean(dim=[1, 2, 3]) for m in perceptual.layer_maps_from(x, taps))
    return lambda x: perceptual(x, target)


@contextlib.contextmanager
def _frozen(*modules: object) -> Iterator[None]:
    """Temporarily disables gradients of the modules' parameters (restores the flags on exit)."""
    saved: list[tuple[torch.Tensor, bool]] = []
    for m in modules:
        if isinstance(m, nn.Module):
            for p in m.parameters():
                saved.append((p, p.requires_grad))
                p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _check_target(G: nn.Module, target: torch.Tensor) -> dict[str, int]:
    if not isinstance(target, torch.Tensor) or target.ndim != 4:
        shape = list(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ShapeError(f"target must be a (B, 3, R, R) tensor in [-1, 1], got {shape}")
    if target.shape[1] != 3:
        raise ShapeError(f"target must have 3 (RGB) channels, got {target.shape[1]} (shape {list(target.shape)}); "
                         "convert grey or RGBA images to RGB first")
    b = check_shape(target, ["B", 3, "H", "W"], "target")
    if b["H"] != G.resolution or b["W"] != G.resolution:
        raise ShapeError(f"target is {b['H']}x{b['W']} but the generator renders {G.resolution}x{G.resolution}; "
                         f"align/resize the image to {G.resolution}x{G.resolution}")
    if not target.is_floating_point():
        raise ShapeError(f"target must be a float tensor in [-1, 1], got dtype {target.dtype}")
    if not bool(torch.isfinite(target).all()):
        raise ShapeError("target holds NaN or infinite values")
    lo, hi = float(target.min()), float(target.max())
    if lo < -1.5 or hi > 1.5:
        raise ShapeError(f"target values span [{lo:.3g}, {hi:.3g}] but must be in [-1, 1]; "
                         "convert uint8 pixels with dhr.io.uint8_to_tensor")
    return b


def _initial_latent(G: nn.Module, config: OptimConfig, batch: int, init_ws: torch.Tensor | None,
                    mean: torch.Tensor | None) -> torch.Tensor:
    """The start latent, ``(B, D)`` in W or ``(B, num_ws, D)`` in W+ (a fresh tensor)."""
    num_ws, dim = G.num_ws, G.style_dim
    if config.init == "given":
        if init_ws is None:
            raise ConfigError("init='given' needs the init_ws argument ((B, D) or (B, num_ws, D) codes)")
        ws = init_ws.detach()
        if ws.ndim == 2:
            check_shape(ws, [batch, dim], "init_ws")
            return ws[:, None].expand(-1, num_ws, -1).clone() if config.w_plus else ws.clone()
        check_shape(ws, [batch, num_ws, dim], "init_ws")
        if config.w_plus:
            return ws.clone()
        if not torch.allclose(ws, ws[:, :1].expand_as(ws), rtol=0.0, atol=1e-6):
            raise ConfigError("init_ws holds different codes per layer but w_plus=False optimises one code per "
                              "image; pass (B, D) codes or set w_plus=True")
        return ws[:, 0].clone()
    if init_ws is not None:
        raise ConfigError(f"init_ws was given but init={config.init!r}; set init='given' to start from it")
    if config.init == "w_avg":
        w = G.w_avg.detach()
        if not bool(w.abs().sum() > 0):
            raise ConfigError("init='w_avg' but the generator's w_avg is all zeros (the checkpoint has no average "
                              "latent); use init='mean'")
    else:
        w = mean
    w = w.expand(batch, dim)
    return w[:, None].expand(-1, num_ws, -1).clone() if config.w_plus else w.clone()


# --------------------------------------------------------------------------------------------
# Entry point


def optimize_latent(
    G: nn.Module,
    target: torch.Tensor,
    perceptual: PerceptualLoss,
    config: OptimConfig | None = None,
    *,
    init_ws: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    keys: Sequence[str] | None = None,
    vectorize: bool = False,
) -> tuple[list[Embedding], list[tuple[torch.Tensor, ...]]]:
    """Inverts a batch of images by optimising latents (and noise maps) of a frozen generator.

    Every image is independent: its random stream is seeded from ``(config.seed, key)`` (see
    :mod:`dhr.seeding`), and by default the images are optimised one after the other, so image b gets
    exactly the result of a B=1 run, whatever the batch and its position in it.

    Args:
        G: :class:`dhr.models.stylegan2.Generator` (or anything with ``mapping``, ``w_avg``, ``num_ws``,
            ``style_dim``, ``resolution``, ``synthesis.noise_layers()`` and ``G(ws, noise=...)``). Its
            parameters are not changed (their ``requires_grad`` flags are restored on exit).
        target: ``(B, 3, R, R)`` float in [-1, 1], R = ``G.resolution``.
        perceptual: Perceptual distance, e.g. ``LPIPS("vgg")``: ``(x, y) -> (B,)`` and
            ``layer_maps(x, y) -> [(B, 1, h_l, w_l)]``.
        config: Options; defaults to :meth:`OptimConfig.coarse`.
        init_ws: Start codes ``(B, D)`` or ``(B, num_ws, D)``, only with ``config.init == "given"``.
        progress: Optional ``callable(step, total, losses)`` called after every step with the
            ``lpips``, ``mse``, ``noise_reg``, ``total`` of the images being optimised (their mean) and
            the step's ``lr``; ``total`` counts the steps of all images (``B * steps`` unless vectorised).
        keys: One string per image seeding its random stream; default the content key
            :func:`dhr.seeding.image_key` of each target.
        vectorize: Optimise the B images together in one batched loop (faster on a GPU). Results then
            equal B=1 runs only to float rounding, amplified by Adam; False (default) runs each image
            alone, so results are bit-identical whatever the batch.

    Returns:
        ``(embeddings, error_maps)``: one :class:`Embedding` per image (``ws (num_ws, D)``, ``image
        (3, R, R)`` rendered from the final latent and noise, unclamped; ``noise`` the optimised maps
        ``(1, 1, r, r)`` or None; ``losses`` the per-step curves) and, per image, a tuple of the
        detached per-layer error maps ``(1, h_l, w_l)`` of the last step (empty when
        ``config.return_error_maps`` is False).

    Raises:
        ShapeError: If ``target`` is not ``(B, 3, G.resolution, G.resolution)`` in [-1, 1].
        ConfigError: If the generator lacks what the init or latent noise needs, or ``init_ws``
            disagrees with ``config.init``.
    """
    config = OptimConfig.coarse() if config is None else config
    if not isinstance(config, OptimConfig):
        raise ConfigError(f"config must be an OptimConfig, got {type(config).__name__}")
    b = _check_target(G, target)
    batch = b["B"]
    has_mapping = isinstance(getattr(G, "mapping", None), nn.Module)
    if (config.init == "mean" or config.noise > 0) and not has_mapping:
        raise ConfigError(f"init={config.init!r} with noise={config.noise} needs the generator's mapping network, "
                          "which this generator lacks; use init='w_avg' or 'given' with noise=0")
    if config.init == "w_avg" and not isinstance(getattr(G, "w_avg", None), torch.Tensor):
        raise ConfigError("init='w_avg' but the generator has no w_avg buffer; use init='mean'")

    keys = image_keys(target, keys)
    stats = None
    if config.init == "mean" or config.noise > 0:
        with _frozen(G):
            stats = _cached_statistics(G, config.n_mean_samples, config.seed)
    _initial_latent(G, config, batch, init_ws, None if stats is None else stats[0])  # validates init_ws
    if vectorize or batch == 1:
        return _optimize(G, target, perceptual, config, init_ws, progress, keys, stats)
    embeddings: list[Embedding] = []
    maps: list[tuple[torch.Tensor, ...]] = []
    for i in range(batch):
        def each(step, total, losses, _i=i):
            progress(_i * config.steps + step, batch * config.steps, losses)

        e, m = _optimize(G, target[i:i + 1], perceptual, config, None if init_ws is None else init_ws[i:i + 1],
                         None if progress is None else each, keys[i:i + 1], stats)
        embeddings += e
        maps += m
    return embeddings, maps


def _optimize(G: nn.Module, target: torch.Tensor, perceptual: PerceptualLoss, config: OptimConfig,
              init_ws: torch.Tensor | None, progress: ProgressFn | None, keys: Sequence[str],
              stats: tuple[torch.Tensor, float] | None) -> tuple[list[Embedding], list[tuple[torch.Tensor, ...]]]:
    """The optimisation loop of :func:`optimize_latent` over one batch (validated inputs)."""
    batch, res = target.shape[0], target.shape[-1]
    device, dtype = target.device, target.dtype
    with _frozen(G, perceptual):
        mean, latent_std = (None, 0.0) if stats is None else stats
        latent = _initial_latent(G, config, batch, init_ws, mean).to(device=device, dtype=dtype)
        latent.requires_grad_(True)

        gens = [image_generator(config.seed, k) for k in keys]
        noise_layers = G.synthesis.noise_layers()
        if config.optimize_noise:
            noises = []
            for layer in noise_layers:
                shape = tuple(layer.noise_const.shape[1:])
                n = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device=device, dtype=dtype)
                noises.append(n.requires_grad_(True))
        else:
            noises = [layer.noise_const.detach().to(device=device, dtype=dtype) for layer in noise_layers]
        params = [latent] + (noises if config.optimize_noise else [])
        opt = torch.optim.Adam(params, lr=config.lr)

        low = min(config.loss_resolution, res)
        target_low = target if low == res else F.interpolate(
            target, size=(low, low), mode="bilinear", align_corners=False, antialias=True)

        distance_to_target = _perceptual_to(perceptual, target_low)
        history: list[torch.Tensor] = []
        error_maps: list[torch.Tensor] = []
        for step in range(config.steps):
            lr = lr_at(step, config)
            for group in opt.param_groups:
                group["lr"] = lr
            scale = latent_noise_scale(step, config, latent_std)
            if scale > 0:
                draw = torch.stack([torch.randn(latent.shape[1:], generator=g) for g in gens])
                latent_n = latent + draw.to(device=device, dtype=dtype) * scale
            else:
                latent_n = latent
            img = G(latent_n, noise=noises)
            if step == config.steps - 1 and config.return_error_maps:
                with torch.no_grad():
                    error_maps = [m.detach() for m in perceptual.layer_maps(img.detach(), target)]
            img_low = img.clamp(-1, 1)
            if low != res:
                img_low = F.interpolate(img_low, size=(low, low), mode="bilinear", align_corners=False)
            p_loss = distance_to_target(img_low).reshape(batch)
            mse = (img_low - target_low).square().mean(dim=(1, 2, 3))
            n_loss = noise_regularizer(noises) if config.optimize_noise else torch.zeros_like(mse)
            total = config.lpips_weight * p_loss + config.noise_regularize * n_loss + config.l2_weight * mse
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            if config.optimize_noise:
                normalize_noise_(noises)
            terms = torch.stack([p_loss, mse, n_loss, total], dim=1).detach()
            history.append(terms)
            if progress is not None:
                means = terms.mean(0).tolist()
                progress(step + 1, config.steps, {"lpips": means[0], "mse": means[1], "noise_reg": means[2],
                                                  "total": means[3], "lr": lr})

        with torch.no_grad():
            final = G(latent.detach(), noise=[n.detach() for n in noises])
    curves = torch.stack(history, dim=1).cpu()  # (B, steps, 4)
    ws = latent.detach()
    if ws.ndim == 2:
        ws = ws[:, None].expand(-1, G.num_ws, -1)
    embeddings, maps = [], []
    for i in range(batch):
        c = curves[i]
        embeddings.append(Embedding(
            ws=ws[i].clone(),
            image=final[i].clone(),
            method="optim",
            noise=tuple(n[i:i + 1].detach().clone() for n in noises) if config.optimize_noise else None,
            losses={"lpips": c[:, 0].tolist(), "mse": c[:, 1].tolist(), "noise_reg": c[:, 2].tolist(),
                    "total": c[:, 3].tolist()},
        ))
        maps.append(tuple(m[i].clone() for m in error_maps))
    logger.debug("optimize_latent: %d images, %d steps, final mean lpips %.4f", batch, config.steps,
                 float(curves[:, -1, 0].mean()))
    return embeddings, maps
