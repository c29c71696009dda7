from __future__ import annotations

import pytest
import torch

from dhr.errors import ConfigError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.refinement.baselines import PTIConfig, embedding_only, refine_feature, refine_pti
from dhr.refinement.hybrid import RefineConfig
from dhr.refinement.render import render


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    lp = LPIPS("squeeze")
    ws = G.sample_ws(torch.randn(2, 32)).detach().clone()
    with torch.no_grad():
        target = (G(ws) + 0.3 * torch.randn(2, 3, 32, 32)).clamp(-1, 1)
    return G, lp, ws, target


def test_pti_tunes_weights_only_and_reduces_loss(setup):
    G, lp, ws, target = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    inv = refine_pti(G, target[:1], ws[:1], lp, PTIConfig(steps=4, lr=1e-3, delta_format="fp32"))[0]
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert inv.method == "pti" and inv.feature is None and inv.domain is None
    assert inv.weight_delta and not any(k.startswith("mapping") for k in inv.weight_delta)
    curve = inv.losses["loss_in"]
    assert curve[-1] < curve[0]
    assert torch.allclose(render(G, inv), inv.image, atol=1e-5)


def test_pti_batch_equals_single(setup):
    G, lp, ws, target = setup
    cfg = PTIConfig(steps=3, lr=1e-3, delta_format="fp32")
    both = refine_pti(G, target, ws, lp, cfg)
    for i in range(2):
        one = refine_pti(G, target[i:i + 1], ws[i:i + 1], lp, cfg)[0]
        assert torch.allclose(both[i].image, one.image, atol=1e-4)
        # Adam's first steps are ~lr * sign(g): elements whose gradient is ~0 may differ by float
        # rounding between the vmapped and the plain forward, so compare the deltas on average.
        diff = torch.cat([(both[i].weight_delta[k] - one.weight_delta[k]).flatten() for k in one.weight_delta])
        assert diff.abs().mean() < 1e-5


def test_feature_only_replaces_feature_everywhere(setup):
    G, lp, ws, target = setup
    inv = refine_feature(G, target[:1], ws[:1], lp, RefineConfig(steps=3, feature_lr=0.05, feature_format="fp32"))[0]
    assert inv.method == "feature" and inv.weight_delta == {} and inv.feature_mask is None
    assert inv.feature_resolution == 8
    assert inv.losses["loss_out"][-1] < inv.losses["loss_out"][0]
    assert torch.allclose(render(G, inv), inv.image, atol=1e-5)


def test_embedding_only(setup):
    G, _, ws, target = setup
    invs = embedding_only(G, target, ws, method="optim")
    assert [i.method for i in invs] == ["optim", "optim"]
    with torch.no_grad():
        assert torch.allclose(invs[1].image, G(ws)[1], atol=1e-5)
    assert invs[0].weight_delta == {} and invs[0].feature is None
    with pytest.raises(ConfigError):
        embedding_only(G, target, ws, method="dhr")


def test_pti_config_validation():
    with pytest.raises(ConfigError):
        PTIConfig(lr=float("nan"))
    assert PTIConfig().steps == 350 and PTIConfig().lr == 3e-4
