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

The *faithful loops* that check the optimised path are in :mod:`dhr.reference.faithful`.

Example:
    >>> from dhr.reference import run_reference
    >>> runs = run_reference(G, aligned, start="mean", coarse_perceptual=lpips_vgg, perceptual=lpips_alex)
    >>> runs[0].losses["lpips_out"][:3], runs[0].in_domain_fraction, runs[0].error
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dhr.bundle.codec import as_stored
from dhr.config import InvertConfig
from dhr.embed.optimize import OptimConfig, latent_statistics
from dhr.engine import require_finite
from dhr.errors import ConfigError, DivergedError, ShapeError
from dhr.refinement.hybrid import RefineConfig, check_inputs, refine_dhr
from dhr.segmentation.domain import SegmentConfig
from dhr.types import DomainMask, Inversion

__all__ = ["ReferenceRun", "reference_config", "reference_start", "run_reference", "save_reference_run"]

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
        if inv is not None and errors[i] is None:
            try:
                require_finite(inv, f"image {i}")
            except DivergedError as e:
                errors[i] = str(e)
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
