"""InterFaceGAN: a linear attribute boundary in W (Shen et al., CVPR 2020).

Given codes ``w (N, D)`` and attribute labels, fits a hyperplane that separates (binary labels)
or predicts (continuous labels) the attribute; its unit normal n is the edit direction
(``w + strength * n`` makes the attribute stronger). The reference uses a linear SVM; here an
L2-regularised logistic regression (Newton iterations) for binary labels and ridge least squares
for continuous ones, in plain torch.

Notation (paper -> code): n = ``Direction.vector``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from dhr.checks import check_shape
from dhr.editing.directions import Direction
from dhr.errors import EditError

__all__ = ["fit_boundary"]

LabelMode = Literal["auto", "binary", "continuous"]


def _logistic_normal(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int) -> torch.Tensor:
    """Newton's method for L2-regularised logistic regression; returns the weight (D,) (bias dropped)."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    reg = torch.full((d + 1,), l2 * n, dtype=x.dtype, device=x.device)
    reg[-1] = 0.0  # bias is not penalised
    beta = torch.zeros(d + 1, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        p = torch.sigmoid(xb @ beta)
        grad = xb.T @ (p - y) + reg * beta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + torch.diag(reg)
        step = torch.linalg.solve(hess, grad)
        beta = beta - step
        if float(step.abs().max()) < 1e-8:
            break
    return beta[:d]


def fit_boundary(w: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *, name: str = "attribute",
                 mode: LabelMode = "auto", l2: float = 1e-3, iters: int = 50) -> Direction:
    """Fits the unit normal of a linear boundary between codes and attribute labels.

    Args:
        w: ``(N, D)`` W codes (N >= 2).
        labels: ``(N,)`` labels: binary (two distinct values; the larger one is "positive") or
            continuous scores.
        name: Name of the returned direction.
        mode: ``"binary"`` (logistic regression), ``"continuous"`` (ridge regression on centred
            codes) or ``"auto"`` (binary when the labels take exactly two values).
        l2: Ridge / L2 strength, relative to N (keeps separable data finite).
        iters: Maximum Newton iterations (binary mode).

    Returns:
        A unit-norm ``(D,)`` :class:`Direction` of kind ``"interfacegan"`` pointing towards
        larger labels (float32, CPU).

    Raises:
        ShapeError: If the shapes do not match.
        EditError: On degenerate labels (a single value, NaN) or an unknown mode.
    """
    x = torch.as_tensor(w).detach().double().cpu()
    y = torch.as_tensor(labels).detach().double().cpu().reshape(-1)
    dims = check_shape(x, ["N", "D"], "w")
    check_shape(y, [dims["N"]], "labels")
    if mode not in ("auto", "binary", "continuous"):
        raise EditError(f"mode={mode!r} is not valid; choose one of ['auto', 'binary', 'continuous']")
    if dims["N"] < 2 or not bool(torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise EditError("fit_boundary needs N >= 2 finite codes and labels")
    values = torch.unique(y)
    if values.numel() < 2:
        raise EditError(f"all {dims['N']} labels are {float(values[0])}; a boundary needs two classes or a spread")
    if mode == "auto":
        mode = "binary" if values.numel() == 2 else "continuous"
    if mode == "binary" and values.numel() != 2:
        raise EditError(f"mode='binary' needs labels with two distinct values, got {values.numel()}")
    mean = x.mean(0)
    xc = x - mean
    if mode == "binary":
        target = (y == values.max()).double()
        normal = _logistic_normal(xc, target, float(l2), int(iters))
    else:
        yc = y - y.mean()
        gram = xc.T @ xc + float(l2) * dims["N"] * torch.eye(dims["D"], dtype=x.dtype)
        normal = torch.linalg.solve(gram, xc.T @ yc)
    norm = normal.norm()
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise EditError("the fitted boundary is degenerate (zero or non-finite normal); check the labels")
    vector = (normal / norm).float()
    return Direction(name, vector, None, "w", f"interfacegan.fit_boundary({mode}, N={dims['N']})", "interfacegan")
