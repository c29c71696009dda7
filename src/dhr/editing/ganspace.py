"""GANSpace: principal components of W as edit directions (Härkönen et al., NeurIPS 2020).

Samples ``w = mapping(z)`` for seeded Gaussian z, and takes the PCA of those codes. The result has
the structure of e4e's ``ffhq_pca.pt`` (:class:`~dhr.editing.registry.GanSpacePCA`: mean,
unit components, standard deviations) and gives directions with e4e's
``(component, start, end, strength)`` convention.

Notation (paper -> code): μ = ``mean``; v_i = ``comp[i]``; σ_i = ``std[i]``.
"""

from __future__ import annotations

import torch

from dhr.checks import check_shape
from dhr.editing.directions import Direction, GanSpaceMode
from dhr.editing.registry import GanSpacePCA
from dhr.errors import EditError
from dhr.models.stylegan2 import Generator

__all__ = ["pca", "fit_ganspace", "ganspace_directions"]


def pca(w: torch.Tensor, k: int) -> GanSpacePCA:
    """PCA of codes ``w (N, D)``: the top-``k`` axes by explained variance.

    Args:
        w: ``(N, D)`` float codes, N >= 2.
        k: Number of components, 1 <= k <= min(N - 1, D).

    Returns:
        :class:`GanSpacePCA` with ``mean (D,)``, ``comp (k, D)`` (orthonormal rows, sign fixed so
        the largest-magnitude entry is positive) and ``std (k,)`` (sample standard deviation,
        decreasing), float32 on ``w``'s device.
    """
    dims = check_shape(w, ["N", "D"], "w")
    n, d = dims["N"], dims["D"]
    if not 1 <= int(k) <= min(n - 1, d):
        raise EditError(f"PCA k={k} must be between 1 and min(N - 1, D) = {min(n - 1, d)} (N={n}, D={d})")
    x = w.detach().double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comp = vh[: int(k)]
    peak = comp.gather(1, comp.abs().argmax(dim=1, keepdim=True))
    comp = comp * torch.sign(peak)
    std = s[: int(k)] / (n - 1) ** 0.5
    return GanSpacePCA(mean.float(), comp.float().contiguous(), std.float())


@torch.no_grad()
def fit_ganspace(G: Generator, *, n: int = 10_000, k: int = 80, seed: int = 0, batch: int = 1024) -> GanSpacePCA:
    """GANSpace PCA of W for ``G`` from ``n`` mapped latents.

    Args:
        G: A native generator.
        n: Number of samples (z drawn on the CPU from ``torch.Generator().manual_seed(seed)``).
        k: Number of components kept (e4e's FFHQ file keeps 80).
        seed: Seed of z (the result is deterministic for a given seed and model).
        batch: Mapping batch size.

    Returns:
        :class:`GanSpacePCA` (save in e4e's format with ``.save(path)``).
    """
    if n < 2 or batch < 1:
        raise EditError(f"fit_ganspace needs n >= 2 and batch >= 1, got n={n}, batch={batch}")
    p = next(G.parameters())
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), G.style_dim, generator=gen)
    ws = [G.mapping(z[i:i + batch].to(p)).float() for i in range(0, int(n), int(batch))]
    return pca(torch.cat(ws), k)


def ganspace_directions(basis: GanSpacePCA, components: int | list[int] = 10, *,
                        layers: tuple[int, int] | None = None, mode: GanSpaceMode = "increment",
                        source: str = "") -> list[Direction]:
    """Directions for several components of a PCA.

    Args:
        basis: The PCA.
        components: A count (the first n components) or an explicit list of indices.
        layers: W+ range ``[start, stop)`` for every direction; None = all layers.
        mode: ``"increment"`` (strength in standard deviations, added) or ``"absolute"`` (e4e).
        source: Provenance string.

    Returns:
        One :class:`Direction` per component, named ``ganspace_{idx}`` (``_{start}_{stop}`` with layers).
    """
    idx = list(range(int(components))) if isinstance(components, int) else [int(c) for c in components]
    return [basis.direction(c, layers, mode=mode, source=source or "ganspace") for c in idx]
