"""StyleGAN2 generator: parity with rosinality fixtures, native round trips, split synthesis and contracts.

The fixtures live in ``../shared/fixtures/stylegan2_rosinality_*`` beside the checkout (see their README.md);
the parity tests are skipped when they are absent. The unit tests use tiny random generators.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhr.errors import ConfigError, ShapeError
from dhr.models.checkpoint import load_generator, save_pretrained
from dhr.models.convert import convert, import_checkpoint
from dhr.models.stylegan2 import Generator, GeneratorConfig, SynthesisState

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
FIXTURE_NAMES = ["stylegan2_rosinality_32", "stylegan2_rosinality_64_cm1"]
ATOL = 1e-4


def _fixture_dir(name: str) -> Path:
    d = FIXTURES / name
    if not (d / "g_ema.pt").is_file() or not (d / "vectors.safetensors").is_file():
        pytest.skip(f"parity fixture {d} is absent (needs ../shared/fixtures beside the checkout)")
    return d


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def fixture(request):
    from safetensors.torch import load_file

    d = _fixture_dir(request.param)
    imported = import_checkpoint(d / "g_ema.pt")
    return d, imported, imported.build_generator(), load_file(str(d / "vectors.safetensors"))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.shared
@torch.no_grad()
def test_parity_with_rosinality(fixture):
    d, imported, g, v = fixture
    assert imported.format == "rosinality"
    assert torch.equal(imported.w_avg, v["latent_avg"])
    w = g.mapping(v["z"])
    assert _maxdiff(w, v["w"]) < ATOL
    assert _maxdiff(g(w), v["img_a_z"]) < ATOL  # W broadcast to every layer
    assert _maxdiff(g(v["wplus"]), v["img_b_wplus"]) < ATOL
    assert _maxdiff(g(g.truncate(v["wplus"], 0.7)), v["img_c_wplus_trunc07"]) < ATOL
    mixed = torch.cat([g.sample_ws(v["z"])[:, :3], g.sample_ws(v["z_mix"])[:, 3:]], dim=1)
    assert _maxdiff(g(mixed), v["img_e_mix_inject3"]) < ATOL
    res = v["feat_in_convs4_b"].shape[-1]
    state = g.run_until(v["wplus"], res)
    assert _maxdiff(state.features, v["feat_in_convs4_b"]) < ATOL
    assert _maxdiff(state.rgb, v["skip_in_convs4_b"]) < ATOL
    layers = g.synthesis.noise_layers()
    noise_keys = sorted((k for k in v if k.startswith("noise_")), key=lambda k: int(k.split("_")[1]))
    assert len(noise_keys) == len(layers)
    for key, layer in zip(noise_keys, layers):
        assert torch.equal(layer.noise_const, v[key]), key
    explicit = [v[k] for k in noise_keys]
    assert torch.equal(g(v["wplus"], noise=explicit), g(v["wplus"]))


@pytest.mark.shared
@torch.no_grad()
def test_fixture_native_round_trip(fixture, tmp_path):
    d, _, g, v = fixture
    wplus = v["wplus"][:1]  # one sample keeps the test short; batch 4 vs 1 differs by ~1e-5 (README)
    ref = g(wplus)
    g32 = load_generator(convert(d / "g_ema.pt", tmp_path / "f32") / "generator")
    assert _maxdiff(g32(wplus), ref) == 0.0
    assert _maxdiff(g32(wplus), v["img_b_wplus"][:1]) < ATOL
    g_direct = load_generator(d / "g_ema.pt")  # foreign file imported on the fly
    assert _maxdiff(g_direct(wplus), ref) == 0.0
    g16 = load_generator(save_pretrained(g, tmp_path / "f16", dtype="float16"))
    rel = _maxdiff(g16(wplus), ref) / ref.abs().max().item()
    assert rel < 1e-2


# ------------------------------------------------------------------------------------------
# Tiny random generators


def tiny(resolution: int, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(resolution=resolution, style_dim=32, n_mapping=2, channel_base=256, channel_max=32))
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return g.eval()


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
@torch.no_grad()
def test_run_until_run_from_equals_forward(resolution):
    g = tiny(resolution)
    ws = torch.randn(2, g.num_ws, 32)
    full = g(ws)
    assert full.shape == (2, 3, resolution, resolution)
    for res in g.config.resolutions[:-1]:
        state = g.run_until(ws, res)
        assert isinstance(state, SynthesisState) and state.resolution == res
        assert state.features.shape == (2, g.config.channels(res), res, res) and state.rgb.shape == (2, 3, res, res)
        assert torch.equal(g.run_from(ws, state), full), res
    last = g.run_until(ws, resolution)
    assert torch.equal(last.rgb, full)


def test_functional_call_does_not_mutate():
    g = tiny(16).requires_grad_(False)  # the shared base G is frozen; only the substituted copies train
    ws = torch.randn(2, g.num_ws, 32)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    tuned = {k: (v.detach() * 1.05).requires_grad_() for k, v in g.named_parameters() if k.startswith("synthesis.b16")}
    out = torch.func.functional_call(g, tuned, (ws,))
    out.square().mean().backward()
    assert all(t.grad is not None for t in tuned.values())
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in g.parameters())
    with torch.no_grad():
        base = g(ws)
        assert not torch.allclose(out, base)
        same = torch.func.functional_call(g, dict(g.named_parameters()), (ws,))
        assert torch.equal(same, base)
        state = g.run_until(ws, 8)
        resumed = torch.func.functional_call(g, tuned, (ws,), {"start": state})
        assert torch.allclose(resumed, out, atol=1e-5)


@torch.no_grad()
def test_noise_modes():
    g = tiny(16)
    ws = torch.randn(2, g.num_ws, 32)
    const = g(ws, noise_mode="const")
    assert torch.equal(const, g(ws))
    torch.manual_seed(3)
    r1 = g(ws, noise_mode="random")
    torch.manual_seed(3)
    r2 = g(ws, noise_mode="random")
    r3 = g(ws, noise_mode="random")
    assert torch.equal(r1, r2) and not torch.equal(r1, r3) and not torch.equal(r1, const)
    zeros = [torch.zeros(s) for s in g.noise_shapes()]
    assert torch.equal(g(ws, noise_mode="none"), g(ws, noise=zeros))
    buffers = [layer.noise_const for layer in g.synthesis.noise_layers()]
    assert torch.equal(g(ws, noise=buffers), const)
    with pytest.raises(ConfigError, match="noise_mode"):
        g(ws, noise_mode="fixed")


@torch.no_grad()
def test_w_and_wplus_inputs_agree():
    g = tiny(32)
    w = g.mapping(torch.randn(3, 32))
    assert torch.equal(g(w), g(w[:, None].expand(-1, g.num_ws, -1).contiguous()))
    assert torch.equal(g(g.sample_ws(torch.zeros(1, 32) + 1)), g(g.mapping(torch.zeros(1, 32) + 1)))


@torch.no_grad()
def test_bfloat16_autocast_cpu():
    g = tiny(32)
    ws = g.sample_ws(torch.randn(2, 32))
    ref = g(ws)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(ws)
    assert torch.isfinite(out).all()
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 0.1


def test_determinism_under_seed():
    a, b = tiny(16, seed=5), tiny(16, seed=5)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    ws = torch.randn(2, a.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(a(ws), b(ws))
        assert torch.equal(a.mean_latent(64, generator=torch.Generator().manual_seed(1)),
                           b.mean_latent(64, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(tiny(16, seed=6).synthesis.b4.const, a.synthesis.b4.const)


def test_bad_shapes():
    g = tiny(16)
    with pytest.raises(ShapeError, match="ws"):
        g(torch.randn(2, g.num_ws + 1, 32))
    with pytest.raises(ShapeError, match="ws"):
        g(torch.randn(2, 31))
    with pytest.raises(ShapeError, match="ws"):
        g(torch.randn(2, 1, g.num_ws, 32))
    with pytest.raises(ShapeError, match="z"):
        g.mapping(torch.randn(2, 16))
    with pytest.raises(ShapeError, match="noise"):
        g(torch.randn(1, g.num_ws, 32), noise=[torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ConfigError, match="stop"):
        g.run_until(torch.randn(1, g.num_ws, 32), 12)
