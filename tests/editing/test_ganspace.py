"""Tests of dhr.editing.ganspace (PCA of W)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhr.editing.directions import apply_edits, load_direction
from dhr.editing.ganspace import fit_ganspace, ganspace_directions, pca
from dhr.errors import EditError
from dhr.models.stylegan2 import Generator, GeneratorConfig


def test_pca_recovers_known_axes() -> None:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    scales = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    w = (torch.randn(20000, 6, generator=g) * scales) @ q.T + torch.arange(6.0)
    basis = pca(w, 3)
    torch.testing.assert_close(basis.mean, torch.arange(6.0), atol=0.1, rtol=0)
    torch.testing.assert_close(basis.std, scales[:3], rtol=0.03, atol=0)
    cos = (basis.comp @ q[:, :3]).diagonal().abs()
    assert bool((cos > 0.99).all())
    torch.testing.assert_close(basis.comp @ basis.comp.T, torch.eye(3), atol=1e-5, rtol=0)
    with pytest.raises(EditError, match="k="):
        pca(w[:3], 3)


def test_fit_ganspace_deterministic_and_saves_e4e_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=8, style_dim=16, n_mapping=2, channel_base=64, channel_max=8))
    a = fit_ganspace(G, n=500, k=5, seed=3, batch=128)
    b = fit_ganspace(G, n=500, k=5, seed=3, batch=500)
    torch.testing.assert_close(a.comp, b.comp, atol=1e-5, rtol=0)
    assert bool((a.std[:-1] >= a.std[1:]).all())
    # std matches the spread of fresh samples along each axis
    w = G.mapping(torch.randn(4000, 16, generator=torch.Generator().manual_seed(9))).detach()
    torch.testing.assert_close(((w - a.mean) @ a.comp.T).std(0), a.std, rtol=0.1, atol=0)
    a.save(tmp_path / "pca.pt")
    d = load_direction(tmp_path / "pca.pt", component=0, layers=(0, 2), mode="increment")
    ws = G.mapping(torch.randn(2, 16))[:, None].expand(-1, G.num_ws, -1).detach()
    out = apply_edits(ws, [(d, 1.0)])
    torch.testing.assert_close(out[:, 0] - ws[:, 0], (a.std[0] * a.comp[0]).expand(2, -1))


def test_ganspace_directions() -> None:
    basis = pca(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)), 4)
    dirs = ganspace_directions(basis, 3, layers=(1, 2))
    assert [d.name for d in dirs] == ["ganspace_0_1_2", "ganspace_1_1_2", "ganspace_2_1_2"]
    assert all(d.ganspace.mode == "increment" for d in dirs)
    assert [d.ganspace.component for d in ganspace_directions(basis, [3, 1])] == [3, 1]
