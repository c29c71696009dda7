from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dhr.errors import ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.refinement.hybrid import (
    RefineConfig,
    hybrid_losses,
    refine_dhr,
    resolve_feature_resolution,
    tuned_parameter_names,
)
from dhr.refinement.render import hybrid_forward, render

FP32 = dict(delta_format="fp32", feature_format="fp32")


@pytest.fixture(scope="module")
def data(G):
    torch.manual_seed(2)
    ws = G.sample_ws(torch.randn(2, G.style_dim)).detach().clone()
    target = (torch.rand(2, 3, 32, 32) * 2 - 1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 6:26, 4:28] = 1
    mask[1, :, 10:30, 2:20] = 1
    return target, ws, mask


def test_resolve_feature_resolution_defaults_and_errors(G):
    assert resolve_feature_resolution(G, None) == 8  # 32 // 8 = 4 clamped to 8
    assert resolve_feature_resolution(G, 16) == 16
    fake = types.SimpleNamespace(resolution=1024, synthesis=types.SimpleNamespace(resolutions=[2**i for i in range(2, 11)]))
    assert resolve_feature_resolution(fake, None) == 128
    with pytest.raises(ConfigError, match=r"valid: \[4, 8, 16\]"):
        resolve_feature_resolution(G, 32)


def test_tuned_names_exclude_mapping_and_restrict(G):
    names = tuned_parameter_names(G)
    assert names and all(n.startswith("synthesis.") for n in names)
    assert "synthesis.b4.const" in names
    only16 = tuned_parameter_names(G, resolutions=[16])
    assert only16 and all(n.startswith("synthesis.b16.") for n in only16)
    with pytest.raises(ConfigError):
        tuned_parameter_names(G, resolutions=[12])


def test_refine_dhr_does_not_mutate_G_and_renders_image(G, lp, data):
    target, ws, mask = data
    before = {k: v.clone() for k, v in G.state_dict().items()}
    inv = refine_dhr(G, target[:1], ws[:1], mask[:1], lp, RefineConfig(steps=3, weight_steps=2))[0]
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in G.parameters())
    assert inv.method == "dhr" and inv.image.shape == (3, 32, 32)
    assert inv.feature.shape == (G.config.channels(8), 8, 8) and inv.feature_resolution == 8
    assert inv.feature_mask.shape == (1, 8, 8)
    assert inv.weight_delta and all(k.startswith("synthesis.") for k in inv.weight_delta)
    assert len(inv.losses["loss_in"]) == 3 and len(inv.losses["loss_out"]) == 3
    assert torch.allclose(render(G, inv), inv.image, atol=1e-5)
    assert inv.render_spec.delta_format == "fp16" and inv.render_spec.noise_mode == "const"


def test_gradient_routing_first_adam_step(G, lp, data):
    """θ moves along -sign(∂loss_in/∂θ) only, f along -sign(∂loss_out/∂f) only (Adam step 1)."""
    target, ws, mask = data
    target, ws, mask = target[:1], ws[:1], mask[:1]
    cfg = RefineConfig(steps=1, weight_steps=1, feature_lr=0.01, weight_lr=1e-3, **FP32)
    inv = refine_dhr(G, target, ws, mask, lp, cfg)[0]

    r = 8
    names = tuned_parameter_names(G)
    params = dict(G.named_parameters())
    theta = {n: params[n].detach()[None].clone().requires_grad_(True) for n in names}
    f = G.run_until(ws, r).features.detach().clone().requires_grad_(True)
    soft = F.adaptive_avg_pool2d(mask, r)
    img = hybrid_forward(G, theta, ws, feature=f, feature_mask=soft, resolution=r)
    loss_in, loss_out = hybrid_losses(img, target, lp, mask=mask, soft_mask=soft, l2_weight=1, lpips_weight=1,
                                      l2_channel_sum=True)
    g_f_out, g_f_in = torch.autograd.grad(loss_out.sum(), f, retain_graph=True)[0], \
        torch.autograd.grad(loss_in.sum(), f, retain_graph=True)[0]
    g_t = torch.autograd.grad(loss_in.sum(), list(theta.values()), retain_graph=True)
    g_t_out = torch.autograd.grad(loss_out.sum(), list(theta.values()))

    def adam1(g, lr):
        return -lr * g / (g.abs() + 1e-8)

    step_f = inv.feature - f.detach()[0]
    assert torch.allclose(step_f, adam1(g_f_out, 0.01)[0], atol=1e-6)
    assert not torch.allclose(step_f, adam1(g_f_out + g_f_in, 0.01)[0], atol=1e-6)  # loss_in does reach f
    differs = False
    for n, g, go in zip(names, g_t, g_t_out):
        want = adam1(g, 1e-3)[0]
        got = inv.weight_delta.get(n, torch.zeros_like(want))
        assert torch.allclose(got, want, atol=1e-6), n
        differs |= not torch.allclose(got, adam1(g + go, 1e-3)[0], atol=1e-6)
    assert differs  # loss_out does reach θ, but is not used


def test_all_in_and_all_out_masks_are_finite(G, lp, data):
    target, ws, _ = data
    t, w = target[:1], ws[:1]
    cfg = RefineConfig(steps=2, weight_steps=2, **FP32)
    f0 = G.run_until(w, 8).features[0].detach()
    inside = refine_dhr(G, t, w, torch.ones(1, 1, 32, 32), lp, cfg)[0]
    assert torch.isfinite(inside.image).all() and inside.weight_delta
    assert torch.equal(inside.feature, f0)  # loss_out is empty: f never moves
    assert all(torch.isfinite(v).all() for v in inside.losses["loss_out"] + inside.losses["loss_in"] for v in [torch.tensor(v)])
    outside = refine_dhr(G, t, w, torch.zeros(1, 1, 32, 32), lp, cfg)[0]
    assert torch.isfinite(outside.image).all()
    assert outside.weight_delta == {}  # loss_in is empty: θ never moves
    assert not torch.equal(outside.feature, f0)


def test_deterministic(G, lp, data):
    target, ws, mask = data
    cfg = RefineConfig(steps=2, weight_steps=1)
    a = refine_dhr(G, target[:1], ws[:1], mask[:1], lp, cfg)[0]
    b = refine_dhr(G, target[:1], ws[:1], mask[:1], lp, cfg)[0]
    assert torch.equal(a.image, b.image) and torch.equal(a.feature, b.feature)
    assert a.weight_delta.keys() == b.weight_delta.keys()
    assert all(torch.equal(a.weight_delta[k], b.weight_delta[k]) for k in a.weight_delta)


def test_vectorized_batch_equals_single(G, lp, data):
    """The vmapped batch path (``vectorize=True``) gives each image its B=1 result to float rounding."""
    target, ws, mask = data
    cfg = RefineConfig(steps=3, weight_steps=2, **FP32)
    both = refine_dhr(G, target, ws, mask, lp, cfg, vectorize=True)
    for i in range(2):
        one = refine_dhr(G, target[i:i + 1], ws[i:i + 1], mask[i:i + 1], lp, cfg)[0]
        assert torch.allclose(both[i].image, one.image, atol=1e-4)
        assert torch.allclose(both[i].feature, one.feature, atol=1e-4)
        assert both[i].weight_delta.keys() == one.weight_delta.keys()
        diff = torch.cat([(both[i].weight_delta[k] - one.weight_delta[k]).flatten() for k in one.weight_delta])
        assert diff.abs().mean() < 1e-5  # Adam ~ lr * sign(g): near-zero gradients may flip by rounding
        assert torch.allclose(torch.tensor(both[i].losses["loss_in"]), torch.tensor(one.losses["loss_in"]), atol=1e-4)


def test_input_errors_before_optimisation(G, lp, data):
    target, ws, mask = data
    calls = []
    prog = lambda *a: calls.append(a)  # noqa: E731
    with pytest.raises(ConfigError, match="valid"):
        refine_dhr(G, target, ws, mask, lp, RefineConfig(feature_resolution=32), progress=prog)
    with pytest.raises(ShapeError, match="binary"):
        refine_dhr(G, target, ws, mask * 0.5, lp, RefineConfig(steps=1), progress=prog)
    with pytest.raises(ShapeError):
        refine_dhr(G, target[:, :, :16, :16], ws, mask, lp, RefineConfig(steps=1), progress=prog)
    with pytest.raises(ShapeError, match="3"):
        refine_dhr(G, target[:, :1], ws, mask, lp, RefineConfig(steps=1), progress=prog)
    with pytest.raises(ConfigError):
        refine_dhr(G, target, ws, mask, lp, RefineConfig(tune_resolutions=(64,)), progress=prog)
    assert calls == []


def test_refine_config_validation():
    with pytest.raises(ConfigError):
        RefineConfig(feature_resolution=12)
    with pytest.raises(ConfigError):
        RefineConfig(delta_format="int3")
    with pytest.raises(ConfigError):
        RefineConfig(feature_lr=-1)
    assert RefineConfig(tune_resolutions=[8, 16]).tune_resolutions == (8, 16)


SHARED_LPIPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights" / "lpips"


def test_real_lpips_squeeze_reduces_both_region_losses(G):
    backbone = SHARED_LPIPS / "squeezenet1_1_features.safetensors"
    linear = SHARED_LPIPS / "v0.1" / "squeeze.pth"
    if not (backbone.is_file() and linear.is_file()):
        pytest.skip(f"real LPIPS-squeeze weights not found under {SHARED_LPIPS}")
    lp = LPIPS("squeeze", backbone=backbone, linear=linear)
    torch.manual_seed(3)
    ws = G.sample_ws(torch.randn(1, G.style_dim)).detach().clone()
    with torch.no_grad():
        target = G(G.sample_ws(torch.randn(1, G.style_dim))).clamp(-1, 1)  # in-domain: another sample
    target[:, :, 4:14, 18:30] = torch.tensor([0.9, -0.8, 0.2]).view(1, 3, 1, 1)  # an "occluder"
    mask = torch.ones(1, 1, 32, 32)
    mask[:, :, 4:14, 18:30] = 0
    cfg = RefineConfig(steps=8, weight_steps=8, weight_lr=5e-3, feature_lr=0.1, blend_rgb_skip=True)
    inv = refine_dhr(G, target, ws, mask, lp, cfg)[0]
    assert inv.losses["loss_in"][-1] < inv.losses["loss_in"][0]
    assert inv.losses["loss_out"][-1] < inv.losses["loss_out"][0]
    assert inv.render_spec.freeze_ood_skip is True
    assert torch.allclose(render(G, inv), inv.image, atol=1e-5)
