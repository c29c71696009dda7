"""Tests of dhr.editing.sefa on a tiny random generator."""

from __future__ import annotations

import pytest
import torch

from dhr.editing.directions import Direction, apply_edits
from dhr.editing.sefa import sefa, sefa_directions, style_layers
from dhr.errors import EditError
from dhr.models.stylegan2 import Generator, GeneratorConfig


def _generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    cfg = GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=16)
    return Generator(cfg).eval()


def test_style_layers_cover_every_w_index() -> None:
    G = _generator()
    layers = style_layers(G)
    assert sorted({i for i, _ in layers}) == list(range(G.num_ws))
    params = dict(G.named_parameters())
    assert all(params[name].shape[1] == G.style_dim for _, name in layers)
    assert (1, "synthesis.b4.torgb.conv.affine.weight") in layers
    assert (1, "synthesis.b8.conv0.conv.affine.weight") in layers


def test_eigenvectors_orthonormal_and_sorted() -> None:
    G = _generator()
    res = sefa(G)
    v, lam = res.eigenvectors, res.eigenvalues
    torch.testing.assert_close(v @ v.T, torch.eye(G.style_dim), atol=1e-5, rtol=0)
    assert bool((lam[:-1] >= lam[1:]).all()) and bool((lam >= 0).all())
    assert ".torgb." not in " ".join(res.parameters)
    # eigen-equation on the row-normalised stacked weights
    params = dict(G.named_parameters())
    a = torch.cat([params[n].detach() for n in res.parameters])
    a = a / a.norm(dim=1, keepdim=True)
    torch.testing.assert_close((a.T @ a) @ v[0], lam[0] * v[0], atol=1e-4, rtol=1e-4)


def test_layer_selection_and_directions() -> None:
    G = _generator()
    res = sefa(G, layers=(3, 6), include_torgb=True)
    assert res.layers == (3, 6)
    assert set(res.parameters) == {n for i, n in style_layers(G) if 3 <= i < 6}
    dirs = sefa_directions(G, 3, layers=(3, 6))
    assert [d.layers for d in dirs] == [(3, 6)] * 3 and all(d.kind == "sefa" for d in dirs)
    assert dirs[0].name == "sefa_3_6_0"
    ws = torch.randn(2, G.num_ws, G.style_dim)
    moved = (apply_edits(ws, [(dirs[0], 2.0)]) - ws).abs().sum(dim=(0, 2)) > 0
    assert moved.tolist() == [3 <= i < 6 for i in range(G.num_ws)]
    full = sefa_directions(G, 1)
    assert full[0].layers is None


def test_errors() -> None:
    G = _generator()
    with pytest.raises(EditError, match="num_ws"):
        sefa(G, layers=(0, G.num_ws + 1))
    with pytest.raises(EditError, match="select no conv affine"):
        sefa(G, layers=(G.num_ws - 1, G.num_ws))  # the last index drives only the last torgb
    with pytest.raises(EditError, match="k="):
        sefa_directions(G, G.style_dim + 1)


def test_top_direction_changes_image_more_than_random() -> None:
    G = _generator(1)
    top = sefa_directions(G, 1)[0]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(8, G.style_dim, generator=gen))[:, None].expand(-1, G.num_ws, -1)
        base = G(ws)
        change_top = (G(apply_edits(ws, [(top, 3.0)])) - base).square().mean()
        changes = []
        for _ in range(8):
            v = torch.randn(G.style_dim, generator=gen)
            rnd = Direction("rnd", v / v.norm())
            changes.append((G(apply_edits(ws, [(rnd, 3.0)])) - base).square().mean())
    assert float(change_top) > 1.2 * float(torch.stack(changes).mean())
