"""Tests of dhr.embed.optimize: the reference's latent optimisation (schedule, regulariser, batching)."""

from __future__ import annotations

import math

import pytest
import torch

from dhr.embed.optimize import (
    OptimConfig,
    latent_noise_scale,
    latent_statistics,
    lr_at,
    noise_regularizer,
    normalize_noise_,
    optimize_latent,
)
from dhr.errors import ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator
from tests.conftest import TINY, shared_path

FAST = dict(n_mean_samples=256)


def _gen() -> Generator:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    with torch.no_grad():  # a random net has noise strength 0; make the noise maps matter
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.1)
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return _gen()


@pytest.fixture(scope="module")
def lp() -> LPIPS:
    torch.manual_seed(1)
    return LPIPS("alex")


@pytest.fixture(scope="module")
def targets(G) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(2, TINY.style_dim, generator=torch.Generator().manual_seed(5))
        return G(G.mapping(z), noise_mode="random").clamp(-1, 1)


@pytest.fixture(scope="module")
def batch_run(G, lp, targets):
    calls = []
    cfg = OptimConfig.coarse(steps=8, **FAST)
    emb, maps = optimize_latent(G, targets, lp, cfg, progress=lambda s, n, d: calls.append((s, n, d)))
    return cfg, emb, maps, calls


def test_lr_schedule_matches_reference_numbers():
    cfg = OptimConfig.coarse()
    assert lr_at(0, cfg) == 0.0
    assert lr_at(1, cfg) == pytest.approx(0.05)
    assert all(lr_at(i, cfg) == pytest.approx(0.1) for i in range(2, 31))
    assert lr_at(31, cfg) < 0.1
    assert lr_at(39, cfg) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi * 0.1)), rel=1e-9)
    assert lr_at(39, cfg) == pytest.approx(0.0025, abs=1e-4)
    lrs = [lr_at(i, cfg) for i in range(31, 40)]
    assert lrs == sorted(lrs, reverse=True)


def test_latent_noise_ramp():
    cfg = OptimConfig.coarse()
    assert latent_noise_scale(0, cfg, 2.0) == pytest.approx(2.0 * 0.05)
    assert latent_noise_scale(10, cfg, 2.0) == pytest.approx(2.0 * 0.05 * (1 - 0.25 / 0.75) ** 2)
    assert all(latent_noise_scale(i, cfg, 2.0) == 0.0 for i in range(30, 40))


def test_configs():
    assert OptimConfig.coarse() == OptimConfig()
    b = OptimConfig.baseline()
    assert (b.steps, b.w_plus, b.init, b.lr, b.loss_resolution) == (1000, True, "w_avg", 0.1, 256)
    assert OptimConfig.baseline(w_plus=False).w_plus is False
    with pytest.raises(ConfigError):
        OptimConfig(init="encoder")
    with pytest.raises(ConfigError):
        OptimConfig(steps=0)


def test_noise_regularizer_formula_and_independence():
    ones = torch.ones(1, 1, 16, 16)
    # constant map: each level (16, 8) gives 1^2 + 1^2
    assert noise_regularizer([ones]).item() == pytest.approx(4.0)
    assert noise_regularizer([torch.ones(1, 1, 4, 4)]).item() == pytest.approx(2.0)
    n = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    m = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    batched = noise_regularizer([n, m])
    single = torch.cat([noise_regularizer([n[i:i + 1], m[i:i + 1]]) for i in range(3)])
    assert torch.allclose(batched, single, rtol=1e-6, atol=0)
    # manual pyramid for one image
    x, expect = n[:1], 0.0
    while True:
        expect += (x * x.roll(1, 3)).mean() ** 2 + (x * x.roll(1, 2)).mean() ** 2
        if x.shape[-1] <= 8:
            break
        x = torch.nn.functional.avg_pool2d(x, 2)
    assert noise_regularizer([n[:1]]).item() == pytest.approx(float(expect), rel=1e-6)


def test_normalize_noise_per_image():
    n = torch.randn(2, 1, 8, 8) * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1) + torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    normalize_noise_([n])
    assert torch.allclose(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(n.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-6)


def test_latent_statistics_seeded(G):
    m1, s1 = latent_statistics(G, 300, seed=3)
    m2, s2 = latent_statistics(G, 300, seed=3)
    m3, _ = latent_statistics(G, 300, seed=4)
    assert torch.equal(m1, m2) and s1 == s2 and not torch.equal(m1, m3)
    z = torch.randn(300, TINY.style_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = G.mapping(z)
    assert s1 == pytest.approx(float(((w - w.mean(0)) ** 2).sum(1).mean().sqrt()), rel=1e-5)


def test_loss_decreases_and_shapes(batch_run, G, lp, targets):
    cfg, emb, maps, calls = batch_run
    assert len(emb) == 2 and len(maps) == 2
    for e in emb:
        assert e.ws.shape == (G.num_ws, TINY.style_dim)
        assert torch.equal(e.ws, e.ws[:1].expand_as(e.ws))  # W space: one code on every layer
        assert e.image.shape == (3, 32, 32)
        assert e.method == "optim"
        assert [tuple(n.shape) for n in e.noise] == [tuple(s) for s in G.noise_shapes()]
        assert len(e.losses["lpips"]) == cfg.steps
        assert e.losses["lpips"][-1] < e.losses["lpips"][0]
    # returned image is the render of the returned code and noise
    with torch.no_grad():
        again = G(emb[0].ws[None], noise=list(emb[0].noise))[0]
    assert torch.allclose(again, emb[0].image, atol=1e-5)
    # one image after the other: the counter runs over both images' steps
    assert [c[:2] for c in calls] == [(s, 2 * cfg.steps) for s in range(1, 2 * cfg.steps + 1)]
    assert calls[0][2]["lr"] == 0.0 and set(calls[0][2]) == {"lpips", "mse", "noise_reg", "total", "lr"}


def test_noise_maps_are_renormalised_after_every_step(batch_run):
    # the reference renormalises each noise map after each Adam step (zero mean, unit std)
    _, emb, _, _ = batch_run
    for e in emb:
        for n in e.noise:
            assert float(n.mean()) == pytest.approx(0.0, abs=1e-5)
            assert float(n.std()) == pytest.approx(1.0, abs=1e-4)


def test_error_maps_match_layer_maps(batch_run, lp, targets):
    _, emb, maps, _ = batch_run
    ref = lp.layer_maps(targets, targets)
    for i in range(2):
        assert [tuple(m.shape) for m in maps[i]] == [tuple(r.shape[1:]) for r in ref]
        assert all(not m.requires_grad for m in maps[i])
        assert all(float(m.min()) >= 0 for m in maps[i])


def test_determinism_follows_the_image_key(G, lp, targets):
    cfg = OptimConfig.coarse(steps=3, **FAST)
    a, _ = optimize_latent(G, targets[:1], lp, cfg, keys=["photo-a"])
    b, _ = optimize_latent(G, targets[:1], lp, cfg, keys=["photo-a"])
    c, _ = optimize_latent(G, targets[:1], lp, cfg, keys=["photo-b"])
    d, _ = optimize_latent(G, targets[:1], lp, cfg)  # content key
    assert torch.equal(a[0].ws, b[0].ws) and torch.equal(a[0].image, b[0].image)
    assert all(torch.equal(x, y) for x, y in zip(a[0].noise, b[0].noise))
    assert not torch.equal(a[0].ws, c[0].ws)  # the random stream follows the key
    assert not torch.equal(a[0].ws, d[0].ws)
    with pytest.raises(ConfigError, match="one non-empty string per image"):
        optimize_latent(G, targets, lp, cfg, keys=["only-one"])


def test_result_independent_of_batch_and_position(G, lp, targets):
    """A photo's result is the same alone, in any batch and at any position (noise and latent noise
    on: the per-image stream is keyed by content, not by position)."""
    x = torch.cat([targets, targets.flip(-1)])  # 4 different images
    cfg = OptimConfig.coarse(steps=4, **FAST)
    full, fmaps = optimize_latent(G, x, lp, cfg)
    perm = [2, 0, 3, 1]
    permuted, pmaps = optimize_latent(G, x[perm], lp, cfg)
    alone, amaps = optimize_latent(G, x[1:2], lp, cfg)
    for k, i in enumerate(perm):
        assert (permuted[k].ws - full[i].ws).abs().max() <= 1e-4
        assert (permuted[k].image - full[i].image).abs().max() <= 1e-4
        assert all((p - q).abs().max() <= 1e-4 for p, q in zip(pmaps[k], fmaps[i]))
    assert (alone[0].image - full[1].image).abs().max() <= 1e-4
    assert all(torch.equal(p, q) for p, q in zip(alone[0].noise, full[1].noise))
    assert not torch.allclose(full[0].ws, full[1].ws, atol=1e-3)


def test_vectorized_batch_equals_single(targets):
    """``vectorize=True`` optimises the batch together; image b equals its B=1 run (float64: no float32
    rounding noise, which Adam's normalisation amplifies over a few steps)."""
    G = _gen().double()
    torch.manual_seed(1)
    lp = LPIPS("alex").double()
    x = targets.double()
    cfg = OptimConfig.coarse(steps=5, **FAST)
    emb, maps = optimize_latent(G, x, lp, cfg, vectorize=True)
    single, smaps = optimize_latent(G, x[1:], lp, cfg)
    assert torch.allclose(single[0].ws, emb[1].ws, atol=1e-5, rtol=0)
    assert not torch.allclose(single[0].ws, emb[0].ws, atol=1e-3)
    assert all(torch.allclose(p, q, atol=1e-5, rtol=0) for p, q in zip(single[0].noise, emb[1].noise))
    assert all(torch.allclose(p, q, atol=1e-5, rtol=0) for p, q in zip(smaps[0], maps[1]))
    assert single[0].losses["total"] == pytest.approx(emb[1].losses["total"], rel=1e-6)


def test_w_plus_given_init_and_no_noise(G, lp, targets):
    start = torch.randn(1, G.num_ws, TINY.style_dim) * 0.1
    cfg = OptimConfig(steps=2, w_plus=True, init="given", optimize_noise=False, noise=0.0, return_error_maps=False)
    start0 = start.clone()
    emb, maps = optimize_latent(G, targets[:1], lp, cfg, init_ws=start)
    assert emb[0].ws.shape == (G.num_ws, TINY.style_dim)
    assert not torch.equal(emb[0].ws[0], emb[0].ws[-1])  # layers move independently in W+
    assert emb[0].noise is None and maps == [()]
    assert torch.equal(start, start0)  # input untouched
    with torch.no_grad():
        assert torch.allclose(G(emb[0].ws[None])[0], emb[0].image, atol=1e-6)  # fixed noise buffers


def test_generator_left_unchanged(G, lp, targets):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    flags = [p.requires_grad for p in G.parameters()]
    optimize_latent(G, targets[:1], lp, OptimConfig(steps=1, **FAST))
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert flags == [p.requires_grad for p in G.parameters()]
    assert all(p.grad is None for p in G.parameters())


def test_errors(G, lp, targets):
    with pytest.raises(ShapeError, match="16x16.*32x32"):
        optimize_latent(G, torch.zeros(1, 3, 16, 16), lp, OptimConfig(steps=1))
    with pytest.raises(ShapeError, match="channels"):
        optimize_latent(G, torch.zeros(1, 1, 32, 32), lp, OptimConfig(steps=1))
    with pytest.raises(ShapeError, match=r"\[-1, 1\]"):
        optimize_latent(G, torch.full((1, 3, 32, 32), 255.0), lp, OptimConfig(steps=1))
    with pytest.raises(ConfigError, match="w_avg"):  # random generator: w_avg is zeros
        optimize_latent(G, targets[:1], lp, OptimConfig.baseline(steps=1))
    with pytest.raises(ConfigError, match="init_ws"):
        optimize_latent(G, targets[:1], lp, OptimConfig(steps=1, init="given"))
    with pytest.raises(ConfigError, match="init='given'"):
        optimize_latent(G, targets[:1], lp, OptimConfig(steps=1), init_ws=torch.zeros(1, TINY.style_dim))
    with pytest.raises(ConfigError, match="w_plus"):
        optimize_latent(G, targets[:1], lp, OptimConfig(steps=1, init="given", noise=0.0),
                        init_ws=torch.randn(1, G.num_ws, TINY.style_dim))
    nomap = _gen()
    del nomap.mapping
    with pytest.raises(ConfigError, match="mapping"):
        optimize_latent(nomap, targets[:1], lp, OptimConfig(steps=1))


@pytest.mark.shared
def test_real_squeeze_lpips(G, targets):
    w = shared_path("weights", "lpips")
    sq = LPIPS("squeeze", backbone=w / "squeezenet1_1_features.safetensors", linear=w / "v0.1" / "squeeze.pth")
    emb, maps = optimize_latent(G, targets[:1], sq, OptimConfig.coarse(steps=8, **FAST))
    assert emb[0].losses["lpips"][-1] < emb[0].losses["lpips"][0]
    assert len(maps[0]) == 7
    # the maps are LPIPS between the last step's render and the target: their means sum to its distance
    assert float(sum(m.mean() for m in maps[0])) >= 0
