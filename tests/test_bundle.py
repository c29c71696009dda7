from __future__ import annotations

import json

import pytest
import torch

from dhr.bundle import (
    DELTA_FORMATS,
    as_stored,
    decode_tensor,
    encode_tensor,
    load_bundle,
    state_dict_sha256,
    roundtrip_tensor,
    save_bundle,
)
from dhr.errors import CheckpointError, ConfigError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.refinement.hybrid import RefineConfig, refine_dhr
from dhr.refinement.render import render
from dhr.types import RenderSpec


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    lp = LPIPS("squeeze")
    ws = G.sample_ws(torch.randn(1, 32)).detach().clone()
    target = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[:, :, 8:24, 4:28] = 1
    return G, lp, ws, target, mask


@pytest.mark.parametrize("fmt", DELTA_FORMATS)
def test_codec_error_bounds_and_idempotence(fmt):
    torch.manual_seed(0)
    t = torch.randn(64, 32, 3, 3) * torch.logspace(-4, -1, 64)[:, None, None, None]
    parts, eff = encode_tensor(t, fmt)
    back = decode_tensor(parts, eff, tuple(t.shape))
    assert back.shape == t.shape and back.dtype == torch.float32
    rowmax = t.reshape(64, -1).abs().amax(1)[:, None, None, None]
    bound = {"fp32": 0 * rowmax, "fp16": rowmax * 1e-3, "int8": rowmax / 254 * 1.0001, "int4": rowmax / 14 * 1.0001}[fmt]
    assert ((back - t).abs() <= bound + 1e-12).all()
    assert torch.allclose(roundtrip_tensor(back, fmt), back, atol=1e-9, rtol=1e-6)
    if fmt in ("int8", "int4"):  # small tensors stay exact
        small = torch.randn(7)
        assert torch.equal(roundtrip_tensor(small, fmt), small)


def test_int4_odd_length_and_zero_rows():
    t = torch.randn(3, 401)
    t[1] = 0
    back = roundtrip_tensor(t, "int4")
    assert torch.equal(back[1], torch.zeros(401))
    assert (back - t).abs().max() <= t.abs().max() / 14 + 1e-6


@pytest.mark.parametrize("fmt", DELTA_FORMATS)
def test_bundle_round_trip_renders_the_same_image(setup, tmp_path, fmt):
    G, lp, ws, target, mask = setup
    inv = as_stored(G, refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=2, weight_steps=2, weight_lr=0.01,
                                                                        delta_format=fmt)))[0]
    inv = type(inv)(**{**inv.__dict__, "meta": {**inv.meta, "model_sha256": state_dict_sha256(G)}})
    st, js = save_bundle(inv, tmp_path / "face_001", include_target=True, include_image=True)
    assert st.name == "face_001.safetensors" and js.name == "face_001.json"
    side = json.loads(js.read_text())
    assert side["delta_format"] == fmt and side["method"] == "dhr"
    assert side["input_sha256"] and side["library_version"] and "loss_in" in side["losses"]
    assert side["dtypes"]["ws"] == "float32"
    back = load_bundle(tmp_path / "face_001", model=G)
    assert back.weight_delta.keys() == inv.weight_delta.keys()
    for k in inv.weight_delta:
        assert torch.allclose(back.weight_delta[k], inv.weight_delta[k], atol=1e-7, rtol=1e-6), k
    assert torch.allclose(render(G, back), inv.image, atol=1e-5)
    assert torch.equal(back.image, inv.image)
    assert side["dtypes"]["target"] == "uint8"  # a quarter of fp32; rounded to the 256 levels
    assert (back.target - inv.target).abs().max() <= 1 / 127.5 / 2 + 1e-6
    assert torch.equal(back.domain.mask, inv.domain.mask)
    assert back.feature_resolution == inv.feature_resolution


def test_bundle_sizes_shrink_and_model_mismatch(setup, tmp_path):
    G, lp, ws, target, mask = setup
    inv = as_stored(G, refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1,
                                                                        delta_format="fp32")))[0]
    inv = type(inv)(**{**inv.__dict__, "meta": {**inv.meta, "model_sha256": state_dict_sha256(G)}})
    sizes = {}
    for fmt in DELTA_FORMATS:
        st, _ = save_bundle(inv, tmp_path / fmt, delta_format=fmt)
        sizes[fmt] = st.stat().st_size
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["int4"]
    other = Generator(G.config)
    with pytest.raises(CheckpointError, match="model"):
        load_bundle(tmp_path / "fp32", model=other)
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "missing")
    # The image is not stored: it is re-rendered with the generator, or the load says why it cannot be.
    with pytest.raises(CheckpointError, match="model="):
        load_bundle(tmp_path / "fp32")
    back = load_bundle(tmp_path / "fp32", model=G)
    assert torch.allclose(back.image, inv.image, atol=1e-5)
    assert (back.target - inv.target).abs().max() <= 1 / 255 + 1e-6
    save_bundle(inv, tmp_path / "no_target", include_target=False)
    with pytest.raises(CheckpointError, match="no target"):
        load_bundle(tmp_path / "no_target", model=G)


def test_eight_bit_target_round_trips_exactly(setup, tmp_path):
    G, lp, ws, target, mask = setup
    t8 = torch.round((target + 1) * 127.5) / 127.5 - 1  # a target made from an 8-bit crop (the pipeline's)
    inv = refine_dhr(G, t8, ws, mask, lp, RefineConfig(steps=1, weight_steps=1))[0]
    save_bundle(inv, tmp_path / "t8")
    assert torch.equal(load_bundle(tmp_path / "t8", model=G).target, inv.target)


def test_as_stored_applies_the_render_specs_formats(setup):
    G, lp, ws, target, mask = setup
    exact = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=2, weight_steps=2, weight_lr=0.01,
                                                             delta_format="int4", feature_format="fp16"))[0]
    (stored,) = as_stored(G, [exact])
    assert stored.weight_delta.keys() <= exact.weight_delta.keys()
    for n, d in stored.weight_delta.items():
        assert torch.equal(d, roundtrip_tensor(exact.weight_delta[n], "int4")), n
    assert torch.equal(stored.feature, roundtrip_tensor(exact.feature, "fp16"))
    assert not torch.equal(stored.image, exact.image)  # re-rendered from the stored tensors
    assert torch.equal(render(G, stored), stored.image)
    # A tensor that stores as zeros changes nothing and is dropped (1e-9 underflows in fp16).
    name = next(iter(exact.weight_delta))
    under = type(exact)(**{**exact.__dict__, "weight_delta": {name: torch.full_like(exact.weight_delta[name], 1e-9)},
                           "render_spec": RenderSpec(delta_format="fp16")})
    assert as_stored(G, [under])[0].weight_delta == {}
    # fp32 stores exactly: the results come back as they are, without a render.
    f32 = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1, delta_format="fp32",
                                                           feature_format="fp32"))
    assert as_stored(G, f32)[0] is f32[0]


def _as_version_2(json_path):
    """Rewrites a sidecar as dhr wrote it before the render spec was typed (bundle_version 2): the
    noise mode, skip freezing and both formats in ``meta``, no ``render`` section."""
    side = json.loads(json_path.read_text())
    spec = side.pop("render")
    side["bundle_version"] = 2
    side["meta"].update(spec)
    side["meta"]["input_sha256"] = side["input_sha256"]
    json_path.write_text(json.dumps(side, sort_keys=True))


def test_version_2_bundle_loads_and_renders_as_before(setup, tmp_path):
    G, lp, ws, target, mask = setup
    cfg = RefineConfig(steps=2, weight_steps=2, weight_lr=0.01, noise_mode="none", blend_rgb_skip=True,
                       delta_format="int8")
    inv = as_stored(G, refine_dhr(G, target, ws, mask, lp, cfg))[0]
    _, js = save_bundle(inv, tmp_path / "v2")
    assert json.loads(js.read_text())["render"]["noise_mode"] == "none"
    _as_version_2(js)
    back = load_bundle(tmp_path / "v2", model=G)
    assert back.render_spec == RenderSpec(noise_mode="none", freeze_ood_skip=True, delta_format="int8",
                                          feature_format="fp16")
    assert not {"noise_mode", "freeze_ood_skip", "delta_format", "feature_format"} & set(back.meta)
    w2 = inv.ws + 0.5
    assert torch.equal(back.image, inv.image)
    assert torch.equal(render(G, back, w2), render(G, inv, w2))  # noise off and the skip frozen, as made
    assert not torch.equal(render(G, back, w2), render(G, inv, w2, freeze_ood_skip=False, noise_mode="const"))


def test_bad_render_section_is_a_checkpoint_error(setup, tmp_path):
    G, lp, ws, target, mask = setup
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1))[0]
    _, js = save_bundle(inv, tmp_path / "bad")
    side = json.loads(js.read_text())
    side["render"]["noise_mode"] = "random"
    js.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="render.*noise_mode"):
        load_bundle(tmp_path / "bad", model=G)
    with pytest.raises(ConfigError, match="delta_format"):
        RenderSpec(delta_format="int3")


def test_a_photo_given_as_a_bundle_says_to_invert_it_first(tmp_path):
    from PIL import Image

    from dhr.bundle import load_bundle

    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    with pytest.raises(CheckpointError, match=r"face.png is not a result bundle \(a photo\?\): invert it first"):
        load_bundle(tmp_path / "face.png")
    with pytest.raises(CheckpointError, match="bundle file not found"):
        load_bundle(tmp_path / "nothing")
