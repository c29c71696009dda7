"""Tests of dhr.editing.interfacegan (boundary fitting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr.editing.interfacegan import fit_boundary
from dhr.errors import EditError, ShapeError


def _data(n: int = 2000, d: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(d, generator=g)
    normal /= normal.norm()
    scales = torch.linspace(0.5, 2.0, d)  # anisotropic codes, offset from the origin
    w = torch.randn(n, d, generator=g) * scales + 1.0
    return w, normal


def test_binary_labels_recover_normal() -> None:
    w, normal = _data()
    labels = (w @ normal > float(w.mean(0) @ normal) + 0.3).long()
    d = fit_boundary(w, labels, name="smile")
    assert d.kind == "interfacegan" and d.name == "smile" and d.vector.shape == (32,)
    assert float(d.vector.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(d.vector @ normal) > 0.95
    flipped = fit_boundary(w.numpy(), (1 - labels).numpy())  # numpy inputs; orientation follows labels
    assert float(flipped.vector @ normal) < -0.95


def test_continuous_labels_recover_normal() -> None:
    w, normal = _data(seed=1)
    scores = 3.0 * (w @ normal) + 0.5 * torch.randn(w.shape[0], generator=torch.Generator().manual_seed(2))
    d = fit_boundary(w, scores)
    assert "continuous" in d.source
    assert float(d.vector @ normal) > 0.95


def test_errors() -> None:
    w, _ = _data(n=10, d=4)
    with pytest.raises(EditError, match="two classes"):
        fit_boundary(w, np.ones(10))
    with pytest.raises(ShapeError):
        fit_boundary(w, np.ones(9))
    with pytest.raises(EditError, match="two distinct"):
        fit_boundary(w, np.arange(10.0), mode="binary")
    with pytest.raises(EditError, match="mode"):
        fit_boundary(w, np.arange(10.0), mode="svm")  # type: ignore[arg-type]
