"""What the three refinement loops (DHR, PTI, feature-only) share, so that each loop reads like its method.

A loop optimises, for a batch of images, per-image generator weights θ (one stacked copy per image,
substituted with :func:`torch.func.functional_call`, never written into the generator) and/or a
feature f. The pieces:

- :func:`per_image_weights` and :func:`generator_feature`: the starting values θ_G and f_l(w);
- :class:`BlendedForward`: ``G(w, f, m_r; θ)`` (paper eq. 4) that runs the generator up to the
  blend block only once after θ is final;
- :func:`set_grads` and :func:`adam`: gradients as the optimisers want them;
- :class:`LossLog`: the loss curves, kept on the device and read back once after the loop (no
  synchronisation per step unless a progress callback asks for numbers);
- :func:`one_image_at_a_time`: runs a loop per image, so every result is bit-identical to its
  B=1 run whatever the batch (the default), or once over the batch (``vectorize``: through
  :func:`torch.func.vmap`, equal to the B=1 runs up to float rounding);
- :func:`to_inversions`: the results as :class:`~dhr.types.Inversion` with their
  :class:`~dhr.types.RenderSpec`, the image rendered from the exact tensors (the bundle's storage
  round trip is :func:`dhr.bundle.codec.as_stored`).

The switches :data:`_CACHE_PREFIX` and :data:`_FUSED_ADAM` are the ablations of ``dhr bench-speed``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dhr.models.stylegan2 import Generator, SynthesisState
from dhr.refinement.render import hybrid_forward, hybrid_prefix, hybrid_suffix, render_many
from dhr.types import DomainMask, Inversion, RenderSpec

__all__ = ["ProgressFn", "Refined", "per_image_weights", "generator_feature", "BlendedForward", "set_grads",
           "adam", "LossLog", "one_image_at_a_time", "to_inversions"]

ProgressFn = Callable[[str, int, int, dict], None]
"""``progress(stage, step, total, info)``: called after each optimisation step (info: mean losses)."""

_CACHE_PREFIX = True
"""Run the generator before the blend block once after θ freezes (False: every iteration; the
``fast-no-prefix-cache`` ablation of ``dhr bench-speed``). Results are the same either way."""

_FUSED_ADAM = False
"""Use Adam's fused kernel where the device has one (the ``fast-fused-adam`` path of ``dhr
bench-speed``). Off: the kernel's step is ~7x faster on CPU but rounds differently from the
per-tensor loop, and Adam's normalised steps carry that forward; over the reference's 100
iterations it moved faces-64's final in-domain loss by 7.7 % (docs/performance.md), over the 1 %
the fast path must stay within. With it off the fast path's losses equal the faithful loop's."""


@dataclass
class Refined:
    """What a loop found for a batch of B images.

    Attributes:
        theta: ``{name: (B, *shape)}`` tuned weights θ* (empty when no weights were tuned).
        feature: ``(B, C, r, r)`` f*, or None.
        curves: One ``{loss name: [value per step]}`` per image.
        seconds: Wall time of the loop(s).
    """

    theta: dict[str, torch.Tensor]
    feature: torch.Tensor | None
    curves: list[dict[str, list[float]]]
    seconds: float

    @staticmethod
    def cat(parts: Sequence[Refined]) -> Refined:
        """The results of consecutive sub-batches as one."""
        return Refined({k: torch.cat([r.theta[k] for r in parts]) for k in parts[0].theta},
                       None if parts[0].feature is None else torch.cat([r.feature for r in parts]),
                       [c for r in parts for c in r.curves], sum(r.seconds for r in parts))


def per_image_weights(G: Generator, names: Sequence[str], b: int) -> dict[str, torch.Tensor]:
    """θ ← θ_G: ``{name: (b, *shape)}`` leaf copies of ``G``'s parameters, one per image."""
    params = dict(G.named_parameters())
    return {n: params[n].detach()[None].repeat(b, *([1] * params[n].ndim)).clone().requires_grad_(True)
            for n in names}


def generator_feature(G: Generator, ws: torch.Tensor, resolution: int, noise_mode: str) -> torch.Tensor:
    """f ← f_l(w): the generator's own feature ``(B, C, r, r)`` after block r, as a leaf tensor.

    Computed in full precision even under autocast: f is a parameter (Adam updates it in ``ws``'s dtype).
    """
    with torch.no_grad(), torch.autocast(ws.device.type, enabled=False):
        f = G.run_until(ws, resolution, noise_mode=noise_mode).features.detach().clone()
    return f.requires_grad_(True)


class BlendedForward:
    """``G(w, f, m_r; θ)`` (paper eq. 4) for fixed codes ``ws (B, num_ws, D)``.

    While θ changes every block runs every call. From the first call with ``theta_final`` on, θ is
    taken as final (detached once) and the generator up to the blend block, which then no longer
    changes, runs once (:data:`_CACHE_PREFIX`); later calls run only the blend and the blocks after.

    Args:
        G: Base generator.
        ws: ``(B, num_ws, D)`` W+ codes.
        resolution: r, the blend block.
        feature_mask: ``(B, 1, r, r)`` soft m_r, or None (f replaces the generator's feature).
        noise_mode: ``const`` or ``none``.
    """

    def __init__(self, G: Generator, ws: torch.Tensor, resolution: int, feature_mask: torch.Tensor | None,
                 noise_mode: str) -> None:
        self.G, self.ws, self.resolution = G, ws, resolution
        self.feature_mask, self.noise_mode = feature_mask, noise_mode
        self._final: dict[str, torch.Tensor] | None = None
        self._prefix: SynthesisState | None = None

    def __call__(self, theta: dict[str, torch.Tensor], feature: torch.Tensor, *, theta_final: bool) -> torch.Tensor:
        """The ``(B, 3, R, R)`` images, differentiable w.r.t. ``feature`` (and ``theta`` until final)."""
        G, ws, m, nm = self.G, self.ws, self.feature_mask, self.noise_mode
        if not theta_final:
            return hybrid_forward(G, theta, ws, feature=feature, feature_mask=m, resolution=self.resolution,
                                  noise_mode=nm)
        if self._final is None:
            self._final = {k: v.detach() for k, v in theta.items()}
        if not _CACHE_PREFIX:
            return hybrid_forward(G, self._final, ws, feature=feature, feature_mask=m, resolution=self.resolution,
                                  noise_mode=nm)
        if self._prefix is None:
            self._prefix = hybrid_prefix(G, self._final, ws, self.resolution, noise_mode=nm)
        return hybrid_suffix(G, self._final, ws, self._prefix, feature=feature, feature_mask=m, noise_mode=nm)


def set_grads(loss: torch.Tensor, tensors: Sequence[torch.Tensor], *, retain_graph: bool = False) -> None:
    """``t.grad = ∂ loss.sum() / ∂ t`` for each tensor: zeros where the loss does not depend on it,
    contiguous (the fused Adam kernel reads the gradient with the parameter's strides; ``vmap``'s
    may differ). Losses of different images are independent, so the sum gives each its own."""
    grads = torch.autograd.grad(loss.sum(), list(tensors), retain_graph=retain_graph, allow_unused=True)
    for t, g in zip(tensors, grads):
        t.grad = torch.zeros_like(t) if g is None else g.contiguous()


def adam(params: Sequence[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with default betas; its fused kernel where the device has one when :data:`_FUSED_ADAM`
    is set (the same update in one pass per tensor, ~7x faster than the per-tensor loop on CPU for the
    generator's weights, but not bit-identical), and under reduced-precision autocast
    (``InvertConfig.precision="bf16"``), whose rounding of every convolution dwarfs the kernel's: there
    the per-tensor loop would be ~15 % of a bf16 iteration on a 20 M-parameter generator."""
    params = list(params)
    device_type = params[0].device.type if params else "cpu"
    if not (_FUSED_ADAM or torch.is_autocast_enabled(device_type)):
        return torch.optim.Adam(params, lr=lr)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.Adam(params, lr=lr)


class LossLog:
    """Per-image loss curves of a loop, kept on the device until the loop ends.

    Args:
        reported: Names of the losses given to ``progress`` (and recorded).
        extra: Names of further terms, recorded only.
        stage: Stage name given to ``progress``.
        steps: Total steps (for ``progress``).
        progress: Optional callback; it gets the batch mean of the reported losses after each step
            (reading them back synchronises with the device, so only when asked).
    """

    def __init__(self, reported: tuple[str, ...], extra: tuple[str, ...] = (), *, stage: str, steps: int,
                 progress: ProgressFn | None) -> None:
        self.reported, self.names = reported, reported + extra
        self.stage, self.steps, self.progress = stage, steps, progress
        self._rows: list[torch.Tensor] = []
        self._start = time.perf_counter()

    def add(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Records step ``step``'s ``(B,)`` losses (a mapping holding at least every name)."""
        self._rows.append(torch.stack([values[n].detach() for n in self.names], dim=1))
        if self.progress is not None:
            self.progress(self.stage, step + 1, self.steps,
                          {n: float(values[n].detach().mean()) for n in self.reported})

    def result(self, theta: dict[str, torch.Tensor], feature: torch.Tensor | None, b: int) -> Refined:
        """The loop's :class:`Refined` (curves read back from the device here, once)."""
        curves: list[dict[str, list[float]]] = [{n: [] for n in self.names} for _ in range(b)]
        if self._rows:
            table = torch.stack(self._rows, dim=1).cpu().tolist()  # (B, steps, names)
            for i in range(b):
                for j, n in enumerate(self.names):
                    curves[i][n] = [row[j] for row in table[i]]
        return Refined({k: v.detach() for k, v in theta.items()}, None if feature is None else feature.detach(),
                       curves, time.perf_counter() - self._start)


def one_image_at_a_time(loop: Callable[[slice, ProgressFn | None], Refined], b: int, steps: int,
                        progress: ProgressFn | None, vectorize: bool) -> Refined:
    """Runs ``loop(images, progress)`` over the batch of ``b`` images.

    Args:
        loop: Optimises the images ``images`` (a slice of the batch) and returns their result.
        b: Batch size.
        steps: Steps of one loop (progress then counts ``b * steps`` in all).
        progress: Optional callback.
        vectorize: One call over the whole batch (through ``vmap``; equal to the B=1 results up
            to float rounding, which Adam's normalised steps amplify). False: one call per image,
            each result bit-identical to its B=1 run.
    """
    if vectorize or b == 1:
        return loop(slice(0, b), progress)
    parts = []
    for i in range(b):
        def each(stage, step, total, info, _i=i):
            progress(stage, _i * steps + step, b * steps, info)

        parts.append(loop(slice(i, i + 1), None if progress is None else each))
    return Refined.cat(parts)


def to_inversions(G: Generator, target: torch.Tensor, ws: torch.Tensor, refined: Refined, *, method: str,
                  spec: RenderSpec, resolution: int | None, feature_mask: torch.Tensor | None,
                  domains: Sequence[DomainMask] | None, config: dict) -> list[Inversion]:
    """One :class:`Inversion` per image of a batch, its image rendered from θ* and f*.

    Args:
        G: The generator (its parameters are θ_G).
        target: ``(B, 3, R, R)`` targets.
        ws: ``(B, num_ws, D)`` codes.
        refined: The loop's result.
        method: ``dhr``, ``pti`` or ``feature``.
        spec: How the results render and are stored.
        resolution: r of the feature, or None.
        feature_mask: ``(B, 1, r, r)`` soft m_r, or None.
        domains: One domain mask per image, or None.
        config: The method's options as plain types (``meta["config"]``).
    """
    params = dict(G.named_parameters())
    b = target.shape[0]
    timings = {"refine_s": refined.seconds / b, "refine_batch_s": refined.seconds, "batch_size": b}
    out = []
    for i in range(b):
        delta = {n: t[i] - params[n].detach() for n, t in refined.theta.items()}
        out.append(Inversion(
            ws=ws[i].detach(),
            image=torch.zeros_like(target[i]),
            target=target[i].detach(),
            method=method,
            weight_delta={n: d for n, d in delta.items() if bool((d != 0).any())},
            feature=None if refined.feature is None else refined.feature[i],
            feature_resolution=resolution if refined.feature is not None else None,
            feature_mask=None if feature_mask is None else feature_mask[i].detach(),
            domain=None if domains is None else domains[i],
            losses=refined.curves[i],
            meta={"config": config, "timings": dict(timings)},
            render_spec=spec,
        ))
    images = render_many(G, out)
    return [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(out)]
