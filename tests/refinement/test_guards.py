"""Tests that guard DHR's algorithm against plausible regressions, each against an independent reference.

Every test here was checked to fail under one mutation of the implementation:

- θ updated after ``weight_steps`` -> :func:`test_theta_frozen_after_weight_steps`;
- f driven by the in-domain loss -> :func:`test_feature_follows_only_the_out_of_domain_loss`;
- mask orientation flipped in the losses -> :func:`test_losses_use_the_mask_orientation`,
  :func:`test_theta_follows_only_the_in_domain_loss`;
- mask orientation flipped in the blend -> :func:`test_blend_keeps_generator_feature_where_in_domain`;
- edits rendered without the weight delta, or the feature blended at another block ->
  :func:`test_edit_render_matches_a_tuned_generator_copy`.

The references use the generator's own ``run_until``/``run_from`` on a deep copy holding θ + δ, never
the code under test.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dhr.models.stylegan2 import Generator, SynthesisState
from dhr.refinement.hybrid import RefineConfig, hybrid_losses, refine_dhr
from dhr.refinement.render import hybrid_forward, render

FP32 = dict(delta_format="fp32", feature_format="fp32")
R, r = 32, 8


@pytest.fixture(scope="module")
def case(G):
    torch.manual_seed(2)
    ws = G.sample_ws(torch.randn(1, G.style_dim)).detach().clone()
    with torch.no_grad():
        own = G(ws, noise_mode="const")
    mask = torch.zeros(1, 1, R, R)
    mask[:, :, 4:28, 6:26] = 1  # in-domain block; the border is out of domain
    other = torch.rand(1, 3, R, R, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return ws, own, mask, other


def _copy_with(G: Generator, delta: dict[str, torch.Tensor]) -> Generator:
    g = copy.deepcopy(G)
    with torch.no_grad():
        params = dict(g.named_parameters())
        for name, d in delta.items():
            params[name].add_(d)
    return g


def _reference_render(G, inv, ws):
    """θ' = θ + δ loaded into a copy; blend at the stated block with m_r; resume. No dhr render code."""
    g = _copy_with(G, inv.weight_delta)
    with torch.no_grad():
        state = g.run_until(ws[None], inv.feature_resolution, noise_mode="const")
        m = inv.feature_mask[None]
        feats = state.features * m + inv.feature[None] * (1 - m)
        return g.run_from(ws[None], SynthesisState(feats, state.rgb, inv.feature_resolution), noise_mode="const")[0]


def test_theta_frozen_after_weight_steps(G, lp, case):
    ws, _, mask, target = case
    short = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=2, weight_steps=2, **FP32))[0]
    long = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=5, weight_steps=2, **FP32))[0]
    assert short.weight_delta and short.weight_delta.keys() == long.weight_delta.keys()
    for name, d in short.weight_delta.items():
        assert torch.equal(d, long.weight_delta[name]), name  # θ stops after weight_steps ...
    assert not torch.equal(short.feature, long.feature)  # ... while f goes on
    none = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=3, weight_steps=0, **FP32))[0]
    assert none.weight_delta == {}


def test_feature_follows_only_the_out_of_domain_loss(G, lp, case):
    """Target = the generator's own image outside the mask, something else inside. With L2 only, the
    out-of-domain loss and its gradient are exactly 0 at the start, so one step must leave f at
    run_until(w, r) even though the in-domain loss does reach f (soft mask below 1 at the border)."""
    ws, own, mask, other = case
    target = own * (1 - mask) + other * mask
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1, lpips_weight=0.0, **FP32))[0]
    f0 = G.run_until(ws, r, noise_mode="const").features[0].detach()
    assert torch.equal(inv.feature, f0)
    assert inv.losses["loss_out"][0] == 0.0 and inv.losses["loss_in"][0] > 0
    assert inv.weight_delta  # θ did move (on the in-domain loss)


def test_theta_follows_only_the_in_domain_loss(G, lp, case):
    """The mirror case: the in-domain loss is exactly 0 at the start, so θ must not move."""
    ws, own, mask, other = case
    target = own * mask + other * (1 - mask)
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1, lpips_weight=0.0, **FP32))[0]
    assert inv.weight_delta == {}
    assert inv.losses["loss_in"][0] == 0.0 and inv.losses["loss_out"][0] > 0
    assert not torch.equal(inv.feature, G.run_until(ws, r, noise_mode="const").features[0])


class LocalPerceptual:
    """A perceptual stand-in whose maps are local (per-pixel |x - y| and its 2x pooled version)."""

    def layer_maps(self, x, y):
        d = (x - y).abs().mean(1, keepdim=True)
        return [d, F.avg_pool2d(d, 2)]


def test_losses_use_the_mask_orientation(case):
    _, own, _, other = case
    mask = torch.zeros(1, 1, R, R)
    mask[:, :, 4:28, 8:24] = 1  # on the 4 px grid of m_r: the soft mask is binary too
    image = own * mask + other * (1 - mask)  # wrong only out of domain
    soft = F.adaptive_avg_pool2d(mask, r)
    loss_in, loss_out = hybrid_losses(image, own, LocalPerceptual(), mask=mask, soft_mask=soft, l2_weight=1.0,
                                      lpips_weight=1.0, l2_channel_sum=True)
    assert float(loss_in) == 0.0 and float(loss_out) > 0
    se = (other - own).square().sum(1, keepdim=True)
    want_l2 = float((se * (1 - mask)).sum() / (1 - mask).sum())  # reference: channel-summed / pixel count
    _, l2_only = hybrid_losses(image, own, LocalPerceptual(), mask=mask, soft_mask=soft, l2_weight=1.0,
                               lpips_weight=0.0, l2_channel_sum=True)
    assert float(l2_only) == pytest.approx(want_l2, rel=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_blend_keeps_generator_feature_where_in_domain(G, case, batch):
    ws, _, _, _ = case
    ws = ws.expand(batch, -1, -1)
    state = G.run_until(ws, r, noise_mode="const")
    f = torch.randn_like(state.features)
    params = dict(G.named_parameters())
    theta = {n: params[n].detach()[None].expand(batch, *params[n].shape).clone()
             for n in ("synthesis.b4.const",)}
    with torch.no_grad():
        plain = G(ws, noise_mode="const")
        only_f = G.run_from(ws, SynthesisState(f, state.rgb, r), noise_mode="const")
        half = torch.zeros(batch, 1, r, r)
        half[..., : r // 2] = 1
        mixed_ref = G.run_from(ws, SynthesisState(state.features * half + f * (1 - half), state.rgb, r),
                               noise_mode="const")
        for th in ({}, theta):  # shared weights and per-image weights (B=1 plain call, B=2 vmap)
            ones = hybrid_forward(G, th, ws, feature=f, feature_mask=torch.ones(batch, 1, r, r), resolution=r)
            zeros = hybrid_forward(G, th, ws, feature=f, feature_mask=torch.zeros(batch, 1, r, r), resolution=r)
            mixed = hybrid_forward(G, th, ws, feature=f, feature_mask=half, resolution=r)
            assert torch.allclose(ones, plain, atol=1e-5)  # m = 1: the generator's own feature
            assert torch.allclose(zeros, only_f, atol=1e-5)  # m = 0: f
            assert torch.allclose(mixed, mixed_ref, atol=1e-5)
    assert not torch.allclose(plain, only_f, atol=1e-2)


def test_edit_render_matches_a_tuned_generator_copy(G, lp, case):
    ws, _, mask, target = case
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=3, weight_steps=2, weight_lr=0.02, **FP32))[0]
    assert inv.feature_resolution == r  # R // 8 clamped to 8: the reference's block rule
    w_edit = inv.ws + 0.7 * torch.randn(inv.ws.shape, generator=torch.Generator().manual_seed(4))
    want = _reference_render(G, inv, w_edit)
    got = render(G, inv, w_edit)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(render(G, inv), _reference_render(G, inv, inv.ws), atol=1e-5)
    # the delta matters for edits: rendering without it is far off
    no_delta = _reference_render(G, type(inv)(**{**inv.__dict__, "weight_delta": {}}), w_edit)
    assert (no_delta - want).abs().max() > 1e-2
