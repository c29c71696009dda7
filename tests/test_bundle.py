from __future__ import annotations

import json

import pytest
import torch

from dhr.bundle import (
    DELTA_FORMATS,
    decode_tensor,
    encode_tensor,
    load_bundle,
    state_dict_sha256,
    roundtrip_tensor,
    save_bundle,
)
from dhr.errors import CheckpointError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.refinement.hybrid import RefineConfig, refine_dhr
from dhr.refinement.render import render


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
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=2, weight_steps=2, weight_lr=0.01,
                                                           delta_format=fmt))[0]
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
    inv = refine_dhr(G, target, ws, mask, lp, RefineConfig(steps=1, weight_steps=1, delta_format="fp32"))[0]
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
