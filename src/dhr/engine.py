"""The inversion engine: photo tensors in, :class:`~dhr.types.Inversion` results out.

:func:`invert` composes the stages for a batch of aligned images:

1. embedding: encoder (:func:`dhr.embed.encoder.encode`) or latent optimisation
   (:func:`dhr.embed.optimize.optimize_latent` with ``config.optim``);
2. ``dhr`` only: coarse W inversion from the mean latent (``config.coarse``) giving per-layer error
   maps, then :func:`dhr.segmentation.domain.segment` per image (skipped when masks are given);
3. refinement: :func:`dhr.refinement.hybrid.refine_dhr`, :func:`~dhr.refinement.baselines.refine_pti`,
   :func:`~dhr.refinement.baselines.refine_feature`, or none for ``encoder`` / ``optim``;
4. the results as a bundle stores them (:func:`dhr.bundle.as_stored`: the storage formats of
   their render spec applied, the image re-rendered), so a saved result reloads to the same image.

Every argument is validated before any optimisation starts. Timings per stage, the configuration,
the model's sha256 and the library version are written into ``Inversion.meta``. :func:`render`
re-renders a result, optionally under an edited code, without optimising.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

import dhr
from dhr.bundle.codec import as_stored
from dhr.bundle.store import state_dict_sha256
from dhr.checks import check_shape
from dhr.config import InvertConfig
from dhr.devices import autocast
from dhr.embed.optimize import OptimConfig
from dhr.errors import ConfigError, DivergedError, ShapeError
from dhr.models.stylegan2 import Generator
from dhr.refinement.baselines import embedding_only, refine_feature, refine_pti
from dhr.refinement.hybrid import (
    ProgressFn,
    _check_perceptual,
    check_inputs,
    refine_dhr,
    resolve_feature_resolution,
    tuned_parameter_names,
)
from dhr.refinement.render import render, render_many
from dhr.seeding import image_keys
from dhr.types import DomainMask, Inversion

__all__ = ["invert", "render", "render_many", "resolve_embed", "net_name", "for_each_image", "require_finite"]

logger = logging.getLogger(__name__)


def require_finite(inversion: Inversion, name: str) -> Inversion:
    """``inversion`` itself when its image and code are finite.

    :func:`invert` returns what the optimisation gave, NaN included (a batch is not failed for one
    image); callers that report results check each one with this.

    Raises:
        DivergedError: NaN or infinite values in the image or the W+ code, naming ``name``.
    """
    if not (bool(torch.isfinite(inversion.image).all()) and bool(torch.isfinite(inversion.ws).all())):
        raise DivergedError(f"{name}: the inversion diverged (its image or code holds NaN or infinite values); "
                            "lower the learning rates (coarse.lr, refine.feature_lr, refine.weight_lr) or check "
                            "the model's weights and the input")
    return inversion


def net_name(net: object) -> str:
    """A perceptual network's name for provenance: ``lpips-vgg``, or its class name."""
    name = getattr(net, "net_name", None)
    return f"lpips-{name}" if name else type(net).__name__


def resolve_embed(config: InvertConfig, encoder: object | None) -> str:
    """The embedding actually used: ``encoder`` or ``optim`` (see :attr:`InvertConfig.embed`)."""
    if config.method in ("encoder", "optim"):
        return config.method
    if config.embed is not None:
        return config.embed
    return "encoder" if encoder is not None else "optim"


def _as_batch(G: Generator, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
    else:
        images = list(images)
        if not images:
            raise ShapeError("images is empty; pass a (B, 3, R, R) tensor or a list of (3, R, R) tensors")
        for i, im in enumerate(images):
            if not isinstance(im, torch.Tensor) or im.ndim != 3:
                shape = list(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__
                raise ShapeError(f"images[{i}] must be a (3, R, R) tensor, got {shape}")
            if tuple(im.shape) != tuple(images[0].shape):
                raise ShapeError(f"images[{i}] has shape {list(im.shape)}, images[0] {list(images[0].shape)}; "
                                 "align all images to the generator's resolution")
        images = torch.stack(images)
    if not images.is_floating_point():
        raise ShapeError(f"images must be float in [-1, 1], got dtype {images.dtype}; use dhr.io.uint8_to_tensor")
    check_inputs(G, images, torch.zeros(images.shape[0], G.num_ws, G.style_dim))
    return images


def _check_w_inversion(G: Generator, cfg: OptimConfig, name: str) -> None:
    mapping = getattr(G, "mapping", None)
    has_mapping = isinstance(mapping, nn.Module) and any(True for _ in mapping.parameters())
    w_avg = getattr(G, "w_avg", None)
    has_avg = isinstance(w_avg, torch.Tensor) and bool(w_avg.abs().sum() > 0)
    if (cfg.init == "mean" or cfg.noise > 0) and not has_mapping:
        raise ConfigError(f"{name}: init={cfg.init!r}, noise={cfg.noise} need the generator's mapping network, "
                          "which it lacks; set init='w_avg' (needs a non-zero w_avg) or 'given', and noise=0")
    if cfg.init == "w_avg" and not has_avg:
        hint = "use init='mean'" if has_mapping else "this generator has neither a w_avg nor a mapping network"
        raise ConfigError(f"{name}: init='w_avg' but the generator's w_avg is all zeros; {hint}")


def for_each_image(fn, b: int, workers: int | None = None) -> list:
    """``[fn(0), ..., fn(b - 1)]``, run in up to ``workers`` Python threads (default: torch's thread count).

    For the per-image CPU work between the GPU stages (the segmentation: SLIC at full resolution is
    ~1 s per image at 1024 px, the rest of a batch's work is on the device). SLIC and torch's
    kernels release the GIL, so the images of a batch overlap on a multi-core machine; each image
    still runs exactly its own computation (same inputs, same code: results equal the sequential
    loop's, ``tests/test_engine.py``). One worker, or one image: a plain loop. The first exception
    (in image order) is raised.
    """
    workers = torch.get_num_threads() if workers is None else workers
    n = min(b, max(1, workers))
    if n <= 1:
        return [fn(i) for i in range(b)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="dhr-image") as pool:
        return list(pool.map(fn, range(b)))


def _check_masks(masks, b: int, R: int, device) -> torch.Tensor:
    if isinstance(masks, torch.Tensor):
        m = masks if masks.ndim == 4 else masks[None]
    else:
        m = torch.stack([x if x.ndim == 3 else x[None] for x in masks])
    check_shape(m, [b, 1, R, R], "masks")
    m = m.to(device=device, dtype=torch.float32)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ShapeError("masks must be binary (1 = in-domain, 0 = out-of-domain)")
    empty = [i for i in range(b) if not bool(m[i].any())]
    if empty:
        raise ShapeError(f"masks of images {empty} are empty (no in-domain pixel); DHR needs in-domain pixels to "
                         "tune the weights; use method='feature' for feature-only refinement")
    return m


def invert(
    G: Generator,
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    config: InvertConfig | None = None,
    perceptual: nn.Module,
    coarse_perceptual: nn.Module | None = None,
    encoder: object | None = None,
    parsing: Sequence[object | None] | None = None,
    masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
    keys: Sequence[str] | None = None,
) -> list[Inversion]:
    """Inverts aligned images into ``G`` with the configured method.

    Args:
        G: The generator (never modified).
        images: ``(B, 3, R, R)`` or a list of ``(3, R, R)`` float images in [-1, 1], R = ``G.resolution``.
        config: Options; default :class:`InvertConfig()` (DHR).
        perceptual: LPIPS module for the refinement losses (reference: AlexNet at full resolution).
        coarse_perceptual: LPIPS for the embedding/coarse optimisation and the error maps
            (reference: VGG); default ``perceptual``.
        encoder: Encoder for ``embed='encoder'`` (see :func:`dhr.embed.encoder.encode`).
        parsing: Optional face parsing per image (``ParsingLike`` or None), for DHR's segmentation.
        masks: Optional user domain masks ``(B, 1, R, R)`` binary (1 = in-domain); DHR then skips the
            coarse inversion and segmentation.
        progress: Optional ``progress(stage, step, total, info)``; stages ``embed``, ``coarse``,
            ``refine``, ``pti``, ``feature``.
        keys: One string per image seeding its random streams (see :mod:`dhr.seeding`); default a
            content hash of each image, so a photo gets the same result alone, in any batch and at
            any position (with ``config.vectorize`` False, the default). Stored as
            ``meta['image_key']``.

    Returns:
        One stored :class:`Inversion` per image (see step 4 above) with ``meta['timings']`` (seconds
        per stage), ``meta['config']``, ``meta['model_sha256']``, ``meta['library_version']``,
        ``meta['embed']``.

    Raises:
        ShapeError: Wrong image size or channel count, bad or empty user masks.
        ConfigError: Invalid options, a feature resolution that is not a block of ``G``, a missing
            encoder, or a W inversion the generator cannot start (no mapping and zero ``w_avg``).
    """
    config = InvertConfig() if config is None else config
    if not isinstance(config, InvertConfig):
        raise ConfigError(f"config must be an InvertConfig (see dhr.config.load_config), got {type(config).__name__}")
    target = _as_batch(G, images)
    b, R = target.shape[0], G.resolution
    p = next(G.parameters())
    target = target.to(device=p.device, dtype=p.dtype)
    keys = image_keys(target, keys)
    vec = config.vectorize
    coarse_perceptual = perceptual if coarse_perceptual is None else coarse_perceptual
    _check_perceptual(perceptual)
    _check_perceptual(coarse_perceptual)
    method = config.method
    embed = resolve_embed(config, encoder)
    if embed == "encoder" and encoder is None:
        raise ConfigError(f"method={method!r} with embed='encoder' needs an encoder; pass encoder=... "
                          "or set embed='optim'")
    if embed == "optim":
        _check_w_inversion(G, config.optim, "optim")
    if method in ("dhr", "feature"):
        resolve_feature_resolution(G, config.refine.feature_resolution)
        tuned_parameter_names(G, config.refine.tune, config.refine.tune_resolutions)
    if method == "pti":
        tuned_parameter_names(G, "synthesis", config.pti.tune_resolutions)
    user_masks = None
    if masks is not None:
        if method != "dhr":
            raise ConfigError(f"masks are only used by method='dhr', not {method!r}")
        user_masks = _check_masks(masks, b, R, p.device)
    if method == "dhr" and user_masks is None:
        _check_w_inversion(G, config.coarse, "coarse")
        if parsing is not None and len(parsing) != b:
            raise ConfigError(f"parsing must hold one entry (or None) per image: {len(parsing)} for {b} images")

    def stage_progress(stage: str):
        if progress is None:
            return None
        return lambda step, total, info: progress(stage, step, total, info)

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    amp = autocast(p.device, config.precision)  # fp32: a no-op; bf16: the optimisation stages only
    # 1. Embedding
    t0 = time.perf_counter()
    if embed == "encoder":
        from dhr.embed.encoder import encode

        with amp:
            embeddings = encode(encoder, G, target, vectorize=vec)
    else:
        from dhr.embed.optimize import optimize_latent

        with amp:
            embeddings, _ = optimize_latent(G, target, coarse_perceptual, config.optim,
                                            progress=stage_progress("embed"), keys=keys, vectorize=vec)
    timings["embed_s"] = time.perf_counter() - t0
    ws = torch.stack([e.ws for e in embeddings]).to(p).detach()

    # 2-3. Segmentation and refinement
    if method in ("encoder", "optim"):
        results = embedding_only(G, target, ws, method=method, losses=[e.losses for e in embeddings])
    elif method == "dhr":
        if user_masks is None:
            from dhr.embed.optimize import optimize_latent
            from dhr.segmentation.domain import segment

            t0 = time.perf_counter()
            with amp:
                coarse, maps = optimize_latent(G, target, coarse_perceptual, config.coarse,
                                               progress=stage_progress("coarse"), keys=keys, vectorize=vec)
            timings["coarse_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()

            def segment_one(i: int) -> DomainMask:
                return segment(target[i], coarse[i].image.to(target.dtype), [m.to(target.dtype) for m in maps[i]],
                               parsing=None if parsing is None else parsing[i], config=config.segment)

            domains = for_each_image(segment_one, b)
            timings["segment_s"] = time.perf_counter() - t0
            mask = torch.stack([d.mask for d in domains]).to(p)
        else:
            domains = [DomainMask(mask=user_masks[i]) for i in range(b)]
            mask = user_masks.to(p)
        with amp:
            results = refine_dhr(G, target, ws, mask, perceptual, config.refine, domains=domains, progress=progress,
                                 vectorize=vec)
    elif method == "pti":
        with amp:
            results = refine_pti(G, target, ws, perceptual, config.pti, progress=progress, vectorize=vec)
    else:
        with amp:
            results = refine_feature(G, target, ws, perceptual, config.refine, progress=progress, vectorize=vec)
    results = as_stored(G, results)  # as a bundle stores them: a saved result reloads to the same image
    if config.precision != "fp32":  # the refinement's last render ran in bf16; a reload renders in fp32
        images = render_many(G, results)
        results = [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(results)]
    total = time.perf_counter() - t_all
    coarse_used = embed == "optim" or (method == "dhr" and user_masks is None)

    sha = state_dict_sha256(G)
    out = []
    for inv, key in zip(results, keys):
        meta = dict(inv.meta)
        meta["image_key"] = key
        stage_t = dict(meta.get("timings", {}))
        stage_t.update({k: v / b for k, v in timings.items()})
        stage_t["total_s"] = total / b
        stage_t["batch_size"] = b
        meta.update({
            "timings": stage_t,
            "config": config.to_dict(),
            "embed": embed,
            "perceptual": net_name(perceptual),
            "coarse_perceptual": net_name(coarse_perceptual) if coarse_used else None,
            "model_sha256": sha,
            "library_version": dhr.__version__,
        })
        out.append(dataclasses.replace(inv, meta=meta))
    logger.info("inverted %d image(s) with %s (embed %s) in %.1f s", b, method, embed, total)
    return out
