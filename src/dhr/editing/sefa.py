"""SeFa: closed-form factorisation of a StyleGAN2's style affines (Shen & Zhou, CVPR 2021).

Every style layer maps w to per-channel styles with an affine ``A_l w + b_l`` (``A_l`` is the
``(C_in, D)`` weight of ``synthesis.b{res}.{conv0|conv1|torgb}.conv.affine``). A unit direction n
changes the styles of the chosen layers by ``A n``; SeFa picks the n that maximise
``||A n||^2 = n^T A^T A n``: the top eigenvectors of ``A^T A``, where ``A`` stacks the chosen
layers' weights with each row (one output channel) scaled to unit norm.

Notation (paper -> code): A = ``stacked`` affine weights; n_i = ``eigenvectors[i]``;
λ_i = ``eigenvalues[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dhr.editing.directions import Direction
from dhr.errors import EditError
from dhr.models.stylegan2 import Generator

__all__ = ["SeFaResult", "style_layers", "sefa", "sefa_directions"]


def style_layers(G: Generator) -> list[tuple[int, str]]:
    """Every style layer of ``G`` as ``(w_index, parameter name of its affine weight)``, in W order.

    The ``torgb`` of one block and the ``conv0`` of the next share a W+ index.
    """
    out: list[tuple[int, str]] = []
    for res in G.synthesis.resolutions:
        sl = G.synthesis.ws_slice(res)
        parts = ["conv1", "torgb"] if res == 4 else ["conv0", "conv1", "torgb"]
        for idx, part in zip(range(sl.start, sl.stop), parts):
            path = f"synthesis.b{res}.{part}.conv.affine.weight"
            out.append((idx, path))
    return out


@dataclass(frozen=True, eq=False)
class SeFaResult:
    """Eigen-decomposition of ``A^T A`` for the chosen layers.

    Attributes:
        eigenvalues: ``(D,)`` in decreasing order, >= 0.
        eigenvectors: ``(D, D)``, row i is the unit eigenvector of ``eigenvalues[i]``; the sign is
            fixed so that its largest-magnitude entry is positive.
        layers: W+ range ``[start, stop)`` the factorised layers cover.
        parameters: Names of the affine weights that were stacked.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    layers: tuple[int, int]
    parameters: tuple[str, ...]


def sefa(G: Generator, *, layers: tuple[int, int] | None = None, include_torgb: bool = False) -> SeFaResult:
    """Closed-form factorisation of the style affines of ``G``.

    Args:
        G: A native generator.
        layers: W+ range ``[start, stop)`` whose affines are factorised; None = all layers.
        include_torgb: Also stack the ``torgb`` affines (SeFa's reference uses the convs only).

    Returns:
        A :class:`SeFaResult` (float32 on the generator's device).

    Raises:
        EditError: If the range is outside ``[0, num_ws)`` or selects no affine.
    """
    num_ws = G.num_ws
    start, stop = (0, num_ws) if layers is None else (int(layers[0]), int(layers[1]))
    if not 0 <= start < stop <= num_ws:
        raise EditError(f"SeFa layers=({start}, {stop}) must satisfy 0 <= start < stop <= num_ws={num_ws}")
    params = dict(G.named_parameters())
    chosen = [name for idx, name in style_layers(G)
              if start <= idx < stop and (include_torgb or ".torgb." not in name)]
    if not chosen:
        raise EditError(
            f"SeFa layers=({start}, {stop}) select no conv affine; widen the range or set include_torgb=True"
        )
    with torch.no_grad():
        weight = torch.cat([params[name].detach().double() for name in chosen], dim=0)  # (sum C_in, D)
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        evals, evecs = torch.linalg.eigh(weight.T @ weight)  # ascending; columns are eigenvectors
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1).T  # rows, descending
        peak = evecs.gather(1, evecs.abs().argmax(dim=1, keepdim=True))
        evecs = evecs * torch.sign(peak)
    dtype = torch.float32
    return SeFaResult(evals.to(dtype), evecs.to(dtype).contiguous(), (start, stop), tuple(chosen))


def sefa_directions(G: Generator, k: int = 5, *, layers: tuple[int, int] | None = None,
                    include_torgb: bool = False, names: Sequence[str] | None = None) -> list[Direction]:
    """The top-``k`` SeFa eigenvectors as :class:`Direction` objects (kind ``"sefa"``, space ``"w"``).

    Args:
        G: A native generator.
        k: Number of directions, 1 <= k <= D.
        layers: W+ range ``[start, stop)`` to factorise; each direction applies to the same range.
        include_torgb: See :func:`sefa`.
        names: Optional names; default ``sefa_{start}_{stop}_{i}``.

    Returns:
        ``k`` unit directions sorted by decreasing eigenvalue.
    """
    res = sefa(G, layers=layers, include_torgb=include_torgb)
    dim = res.eigenvectors.shape[0]
    if not 1 <= int(k) <= dim:
        raise EditError(f"SeFa k={k} must be between 1 and D={dim}")
    if names is not None and len(names) != k:
        raise EditError(f"SeFa: {len(names)} names given for k={k} directions")
    start, stop = res.layers
    dir_layers = None if (start, stop) == (0, G.num_ws) else (start, stop)
    out = []
    for i in range(int(k)):
        name = names[i] if names is not None else f"sefa_{start}_{stop}_{i}"
        source = f"sefa(layers={start}:{stop}, torgb={include_torgb}, eigenvalue={float(res.eigenvalues[i]):.4g})"
        out.append(Direction(name, res.eigenvectors[i].detach().cpu(), dir_layers, "w", source, "sefa"))
    return out
