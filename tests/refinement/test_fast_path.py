"""The optimised refinement and coarse inversion against the faithful loop (dhr.reference), which runs
the authors' algorithm plainly: same losses on the same inputs, whatever is cached."""

from __future__ import annotations

import pytest
import torch

from dhr.embed.optimize import OptimConfig, optimize_latent
from dhr.models.small_nets import PerceptualConfig, TinyPerceptual
from dhr.reference import faithful_coarse, faithful_refine
from dhr.refinement import loop
from dhr.refinement.hybrid import RefineConfig, refine_dhr, target_maps_fn
from dhr.refinement.render import hybrid_forward, hybrid_prefix, hybrid_suffix, stack_params

CFG = RefineConfig(steps=8, weight_steps=4, delta_format="fp32", feature_format="fp32")


@pytest.fixture(scope="module")
def data(G):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ws = G.sample_ws(torch.randn(3, G.style_dim, generator=gen))
        x = G(G.sample_ws(torch.randn(2, G.style_dim, generator=gen))).clamp(-1, 1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 6:26, 8:24] = 1
    mask[1, :, 2:20, 4:30] = 1
    return x, ws[:2], mask


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_fast_refinement_equals_the_faithful_loop(G, lp, data):
    # θ is tuned in iterations 0..3 and frozen after, so the cached prefix serves iterations 4..7: a
    # prefix computed before θ's last update (or never refreshed) changes every later loss.
    x, ws, mask = data
    oracle = faithful_refine(G, x[:1], ws[:1], mask[:1], lp, CFG)
    fast = refine_dhr(G, x[:1], ws[:1], mask[:1], lp, CFG)[0]
    for k in ("loss_in", "loss_out", "l2_in", "l2_out"):
        want, got = oracle.losses[k], fast.losses[k] if k in fast.losses else None
        if got is None:
            continue
        assert len(got) == len(want) == CFG.steps
        assert max(_rel(a, b) for a, b in zip(got, want)) < 1e-4, k
    assert (fast.image - oracle.image).abs().max() < 1e-4
    assert (fast.feature - oracle.feature).abs().max() < 1e-4
    for n, d in oracle.weight_delta.items():
        assert (fast.weight_delta.get(n, torch.zeros_like(d)) - d).abs().max() < 1e-5, n


def test_prefix_cache_changes_nothing(G, lp, data, monkeypatch):
    x, ws, mask = data
    cached = refine_dhr(G, x, ws, mask, lp, CFG)
    monkeypatch.setattr(loop, "_CACHE_PREFIX", False)
    plain = refine_dhr(G, x, ws, mask, lp, CFG)
    for a, b in zip(cached, plain):
        assert a.losses["loss_out"] == pytest.approx(b.losses["loss_out"], rel=1e-5)
        assert (a.image - b.image).abs().max() < 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_vectorized_prefix_cache_matches_one_at_a_time(G, lp, data, monkeypatch, fused):
    # fused Adam reads gradients with the parameter's strides; vmap's differ unless made contiguous
    monkeypatch.setattr(loop, "_FUSED_ADAM", fused)
    x, ws, mask = data
    alone = refine_dhr(G, x, ws, mask, lp, CFG)
    together = refine_dhr(G, x, ws, mask, lp, CFG, vectorize=True)
    for a, b in zip(alone, together):
        assert a.losses["loss_out"][-1] == pytest.approx(b.losses["loss_out"][-1], rel=1e-3)
        assert (a.image - b.image).abs().max() < 1e-3


def test_prefix_and_suffix_compose_to_the_blended_forward(G, data):
    x, ws, mask = data
    delta = [{n: 0.01 * torch.randn_like(p) for n, p in G.named_parameters() if n.startswith("synthesis.b4")},
             {n: 0.02 * torch.randn_like(p) for n, p in G.named_parameters() if n.startswith("synthesis.b4")}]
    theta = stack_params(G, delta)
    r = 8
    f = torch.randn(2, G.synthesis.block(r).conv1.bias.shape[0], r, r)
    m = torch.nn.functional.adaptive_avg_pool2d(mask, r)
    for b in (1, 2):
        th = {k: v[:b] for k, v in theta.items()}
        full = hybrid_forward(G, th, ws[:b], feature=f[:b], feature_mask=m[:b], resolution=r)
        pre = hybrid_prefix(G, th, ws[:b], r)
        assert (hybrid_suffix(G, th, ws[:b], pre, feature=f[:b], feature_mask=m[:b]) - full).abs().max() < 1e-5
    # a prefix of other weights is not interchangeable: the blend uses its features
    stale = hybrid_prefix(G, {}, ws, r)
    assert (hybrid_suffix(G, theta, ws, stale, feature=f, feature_mask=m)
            - hybrid_forward(G, theta, ws, feature=f, feature_mask=m, resolution=r)).abs().max() > 1e-4


@pytest.mark.parametrize("net", ["lpips", "tiny"])
def test_target_features_once_give_the_same_maps(lp, net):
    torch.manual_seed(0)
    p = lp if net == "lpips" else TinyPerceptual(PerceptualConfig()).freeze()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    for a, b in zip(target_maps_fn(p, y)(x), p.layer_maps(x, y)):
        assert torch.equal(a, b)

    class Plain:  # no layer_maps_from: falls back to layer_maps(x, target)
        def layer_maps(self, u, v):
            return [(u - v).square().mean(1, keepdim=True)]

    assert torch.equal(target_maps_fn(Plain(), y)(x)[0], (x - y).square().mean(1, keepdim=True))


def test_fast_coarse_equals_the_faithful_loop(G, lp, data):
    x = data[0][:1]
    cfg = OptimConfig.coarse(steps=6, n_mean_samples=300)
    oracle = faithful_coarse(G, x, lp, cfg)
    (emb,), (maps,) = optimize_latent(G, x, lp, cfg)
    assert max(_rel(a, b) for a, b in zip(emb.losses["lpips"], oracle.losses["lpips"])) < 1e-4
    assert (emb.ws - oracle.ws).abs().max() < 1e-5
    for a, b in zip(maps, oracle.error_maps):
        assert (a - b).abs().max() < 1e-5


def test_latent_statistics_are_cached_until_the_mapping_changes(lp):
    from dhr.embed import optimize
    from dhr.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(5)
    g = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32))
    assert optimize._cached_statistics(g, 200, 1) is not optimize._cached_statistics(g, 200, 0)
    first = optimize._cached_statistics(g, 200, 0)
    assert optimize._cached_statistics(g, 200, 0) is first
    with torch.no_grad():
        next(g.mapping.parameters()).mul_(2.0)
    fresh = optimize._cached_statistics(g, 200, 0)
    want = optimize.latent_statistics(g, 200, seed=0)
    assert torch.equal(fresh[0], want[0]) and fresh[1] == want[1]
    assert not torch.equal(fresh[0], first[0])


def test_single_render_uses_a_tuned_copy_that_follows_the_delta(G, lp, data):
    import importlib

    rmod = importlib.import_module("dhr.refinement.render")  # the package exports a function of that name

    x, ws, mask = data
    inv = refine_dhr(G, x[:1], ws[:1], mask[:1], lp, RefineConfig(steps=3, weight_steps=2))[0]

    def functional(w):
        theta = stack_params(G, [inv.weight_delta])
        return hybrid_forward(G, theta, w[None], feature=inv.feature[None], feature_mask=inv.feature_mask[None],
                              resolution=inv.feature_resolution)[0]

    edited = inv.ws + 0.3 * torch.randn_like(inv.ws)
    with torch.no_grad():
        assert (rmod.render(G, inv, edited) - functional(edited)).abs().max() < 1e-5
        assert rmod.render(G, inv, edited).data_ptr() != 0 and len(rmod._TUNED) >= 1
        name = next(iter(inv.weight_delta))
        inv.weight_delta[name].add_(0.5)  # in place: the cached copy must not be reused
        assert (rmod.render(G, inv, edited) - functional(edited)).abs().max() < 1e-5
        inv.weight_delta[name].sub_(0.5)
        assert (rmod.render(G, inv, edited) - functional(edited)).abs().max() < 1e-5


# --------------------------------------------------------------------------------------------
# Under bf16 autocast (InvertConfig.precision="bf16")


def test_statistics_and_the_initial_feature_stay_fp32_under_autocast(G):
    from dhr.embed.optimize import latent_statistics

    want = latent_statistics(G, 300, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = latent_statistics(G, 300, seed=2)
        ws = G.sample_ws(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(1)))
        f = loop.generator_feature(G, ws.float(), 16, "const")
    assert torch.equal(got[0], want[0]) and got[1] == want[1]  # a cached statistic: never bf16
    assert f.dtype == torch.float32 and f.is_leaf and f.requires_grad
    assert torch.equal(f, loop.generator_feature(G, ws.float(), 16, "const"))


def test_adam_uses_the_fused_kernel_only_under_autocast():
    p = [torch.zeros(3, requires_grad=True)]
    assert not loop.adam(p, 0.1).defaults.get("fused")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loop.adam(p, 0.1).defaults.get("fused")


def test_perceptual_distance_is_fp32_under_autocast(lp, data):
    x = data[0]
    want = lp(x[:1], x[1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = lp.layer_maps(x[:1], x[1:])
        got = lp(x[:1], x[1:])
    assert all(m.dtype == torch.float32 for m in maps) and got.dtype == torch.float32
    assert float(got) == pytest.approx(float(want), rel=0.05) and float(got) != float(want)


def test_the_small_perceptual_network_is_fp32_under_autocast(data):
    torch.manual_seed(4)
    net = TinyPerceptual(PerceptualConfig()).freeze()
    with torch.no_grad():
        for w in net.lin_logits:
            w.normal_()
    x = data[0]
    want = net(x[:1], x[1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = net(x[:1], x[1:])
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(want), rel=0.05) and float(got) != float(want)
