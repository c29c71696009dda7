from __future__ import annotations

import dataclasses

import pytest
import torch

from dhr.errors import EditError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.refinement.baselines import embedding_only, refine_feature
from dhr.refinement.hybrid import RefineConfig, refine_dhr
from dhr.refinement.render import render, render_many


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    lp = LPIPS("squeeze")
    ws = G.sample_ws(torch.randn(2, 32)).detach().clone()
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 4:28] = 1
    invs = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=3, weight_steps=2, feature_lr=0.3, weight_lr=0.01))
    return G, lp, invs


def test_render_reproduces_image_and_batches(setup):
    G, _, invs = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    many = render_many(G, invs)
    for i, inv in enumerate(invs):
        assert torch.allclose(render(G, inv), inv.image, atol=1e-5)
        assert torch.allclose(many[i], inv.image, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())


def test_render_edit_keeps_feature_in_ood_region(setup):
    G, _, invs = setup
    inv = invs[0]
    w2 = inv.ws + 0.5 * torch.randn_like(inv.ws)
    edited = render(G, inv, w2)
    assert not torch.allclose(edited, inv.image, atol=1e-3)
    frozen = render(G, inv, w2, freeze_ood_skip=True)
    assert not torch.allclose(frozen, edited, atol=1e-5)
    assert torch.allclose(render(G, inv, freeze_ood_skip=True), inv.image, atol=1e-5)
    comp = render(G, inv, w2, composite_ood=True)
    ood = inv.domain.mask[0] == 0
    assert torch.equal(comp[:, ood], inv.image[:, ood])
    assert torch.equal(comp[:, ~ood], edited[:, ~ood])


def test_freeze_default_follows_config(setup):
    G, _, invs = setup
    inv = dataclasses.replace(invs[0], render_spec=dataclasses.replace(invs[0].render_spec, freeze_ood_skip=True))
    w2 = inv.ws + 0.5
    assert torch.allclose(render(G, inv, w2), render(G, invs[0], w2, freeze_ood_skip=True), atol=1e-6)


def test_composite_needs_domain(setup):
    G, lp, invs = setup
    e = embedding_only(G, invs[0].target[None], invs[0].ws[None])[0]
    assert torch.allclose(render(G, e), e.image, atol=1e-6)
    with pytest.raises(EditError):
        render(G, e, composite_ood=True)


def test_render_many_mixed_kinds(setup):
    G, lp, invs = setup
    f = refine_feature(G, invs[0].target[None], invs[0].ws[None], lp, RefineConfig(steps=1))[0]
    assert f.feature_mask is None and f.weight_delta == {}
    out = render_many(G, [invs[0], f])
    assert torch.allclose(out[0], invs[0].image, atol=1e-5)
    assert torch.allclose(out[1], f.image, atol=1e-5)


def test_render_many_edit_matches_single(setup):
    G, _, invs = setup
    w2 = torch.stack([inv.ws for inv in invs]) + 0.3
    many = render_many(G, invs, w2, freeze_ood_skip=True, composite_ood=True)
    for i, inv in enumerate(invs):
        one = render(G, inv, w2[i], freeze_ood_skip=True, composite_ood=True)
        assert torch.allclose(many[i], one, atol=1e-5)


def test_render_many_follows_each_inversions_spec(setup):
    # A batch whose render specs differ renders each inversion by its own spec, not the first one's.
    G, _, invs = setup
    spec = invs[1].render_spec
    other = dataclasses.replace(invs[1], render_spec=dataclasses.replace(spec, noise_mode="none",
                                                                          freeze_ood_skip=True))
    w2 = torch.stack([inv.ws for inv in invs]) + 0.3
    many = render_many(G, [invs[0], other], w2)
    assert torch.equal(many[1], render(G, other, w2[1]))
    assert not torch.allclose(many[1], render(G, invs[1], w2[1]), atol=1e-4)
    assert torch.allclose(many[0], render(G, invs[0], w2[0]), atol=1e-5)
