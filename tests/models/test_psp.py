from __future__ import annotations

import copy
import math

import pytest
import torch

from dhr.errors import CheckpointError, ConfigError, ShapeError
from dhr.models.encoders.psp import (
    Encoder4Editing,
    GradualStyleEncoder,
    LatentEncoder,
    infer_encoder_arch,
    load_encoder,
)

TINY = (1, 1, 1, 1)  # one IR-SE unit per stage keeps forward passes cheap
BN = 5  # weight, bias, running_mean, running_var, num_batches_tracked


def _expected_e4e_keys(n_styles: int, input_size: int = 256) -> int:
    """Key count of an IR-SE50 pSp/e4e encoder, from the architecture description."""
    stem = 1 + BN + 1  # input_layer: conv, BN, PReLU
    units = 3 + 4 + 14 + 3  # 24 IR-SE units
    per_unit = BN + 1 + 1 + 1 + BN + 2  # BN, conv, PReLU, conv, BN, SE fc1/fc2
    shortcuts = 3 * (1 + BN)  # conv1x1 + BN where the channel count changes (64->128->256->512)
    styles = 0
    for i in range(n_styles):
        spatial = input_size // (16 if i < 3 else 8 if i < 7 else 4)
        styles += 2 * int(math.log2(spatial)) + 2  # each conv weight+bias, then linear weight+bias
    lateral = 2 * 2  # latlayer1/2 weight+bias
    return stem + units * per_unit + shortcuts + styles + lateral


def test_official_e4e_key_layout():
    with torch.device("meta"):
        sd = Encoder4Editing(18).state_dict()
    assert len(sd) == _expected_e4e_keys(18) == 621
    shapes = {
        "input_layer.0.weight": (64, 3, 3, 3),
        "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
        "body.23.res_layer.5.fc1.weight": (32, 512, 1, 1),
        "styles.0.convs.0.weight": (512, 512, 3, 3),
        "styles.0.convs.6.bias": (512,),
        "styles.17.convs.10.weight": (512, 512, 3, 3),
        "styles.17.linear.weight": (512, 512),
        "latlayer1.weight": (512, 256, 1, 1),
        "latlayer2.weight": (512, 128, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "styles.0.convs.8.weight" not in sd  # 16 -> 1 takes 4 stride-2 convs
    assert "styles.18.linear.weight" not in sd
    assert not any(k.startswith("body.0.shortcut_layer") for k in sd)
    with torch.device("meta"):
        assert GradualStyleEncoder(18).state_dict().keys() == sd.keys()
        assert len(Encoder4Editing(14).state_dict()) == _expected_e4e_keys(14)


def _small(cls, seed=0, **kw):
    torch.manual_seed(seed)
    model = cls(10, num_layers=TINY, style_dim=32, input_size=64, **kw).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def psp_and_e4e():
    psp = _small(GradualStyleEncoder)
    e4e = _small(Encoder4Editing)
    e4e.load_state_dict(psp.state_dict())
    return psp, e4e


def test_shapes_and_e4e_equals_w0_plus_deltas(psp_and_e4e):
    psp, e4e = psp_and_e4e
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        p, e = psp(x), e4e(x)
    assert p.shape == e.shape == (2, 10, 32)
    assert torch.isfinite(p).all()
    # pSp code i is head i on its pyramid level; e4e adds heads 1.. to head 0's code.
    torch.testing.assert_close(e[:, 0], p[:, 0])
    torch.testing.assert_close(e[:, 1:], p[:, :1] + p[:, 1:])
    e4e.progressive_stage = 4
    try:
        with torch.no_grad():
            staged = e4e(x)
    finally:
        e4e.progressive_stage = 9
    torch.testing.assert_close(staged[:, :5], e[:, :5])
    torch.testing.assert_close(staged[:, 5:], p[:, :1].expand(2, 5, 32))
    with pytest.raises(ShapeError):
        psp(torch.zeros(1, 3, 128, 128))


def _official_file(model, path, *, encoder_type, latent_avg, **opts):
    state = {"encoder." + k: v for k, v in model.state_dict().items()}
    state["decoder.style.1.weight"] = torch.zeros(4, 4)
    torch.save({"state_dict": state, "latent_avg": latent_avg,
                "opts": {"encoder_type": encoder_type, "start_from_latent_avg": True, **opts}}, path)


@pytest.mark.parametrize("name,encoder_type", [("e4e", "Encoder4Editing"), ("psp", "GradualStyleEncoder")])
def test_load_encoder_roundtrip(psp_and_e4e, tmp_path, name, encoder_type):
    psp, e4e = psp_and_e4e
    model = e4e if name == "e4e" else psp
    avg = torch.randn(10, 32)
    path = tmp_path / f"{name}.pt"
    _official_file(model, path, encoder_type=encoder_type, latent_avg=avg)
    loaded = load_encoder(path)
    assert isinstance(loaded, LatentEncoder)
    assert loaded.kind == name and loaded.n_styles == 10 and loaded.style_dim == 32
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(loaded(x), ref + avg)
    # a (D,) average broadcasts over styles; the explicit argument overrides the file's
    loaded_w = load_encoder(path, latent_avg=avg[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded_w(x), ref + avg[0])


def test_infer_arch_and_bare_keys(psp_and_e4e):
    psp, _ = psp_and_e4e
    sd = psp.state_dict()
    assert infer_encoder_arch(sd) == {"n_styles": 10, "num_layers": TINY, "mode": "ir_se", "style_dim": 32,
                                      "input_size": 64, "in_channels": 3}
    with torch.device("meta"):
        official = Encoder4Editing(18).state_dict()
        ir100 = GradualStyleEncoder(14, num_layers=100, mode="ir", in_channels=6, style_dim=256).state_dict()
    assert infer_encoder_arch(official) == {"n_styles": 18, "num_layers": 50, "mode": "ir_se", "style_dim": 512,
                                            "input_size": 256, "in_channels": 3}
    assert infer_encoder_arch(ir100) == {"n_styles": 14, "num_layers": 100, "mode": "ir", "style_dim": 256,
                                         "input_size": 256, "in_channels": 6}
    model = load_encoder(sd, kind="psp")
    assert model.latent_avg is None and model.kind == "psp"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), psp(x))


def test_load_encoder_errors(psp_and_e4e):
    psp, _ = psp_and_e4e
    sd = psp.state_dict()
    with pytest.raises(CheckpointError, match="cannot tell e4e from pSp"):
        load_encoder(sd)
    with pytest.raises(CheckpointError, match="contradicts"):
        load_encoder(sd, opts={"encoder_type": "GradualStyleEncoder"}, kind="e4e")
    with pytest.raises(CheckpointError, match="latent_avg has shape"):
        load_encoder(sd, latent_avg=torch.zeros(18, 512), kind="psp")
    with pytest.raises(CheckpointError, match="generator size 1024"):
        load_encoder(sd, opts={"encoder_type": "Encoder4Editing", "stylegan_size": 1024})
    with pytest.raises(CheckpointError, match="no latent_avg"):
        load_encoder(sd, opts={"encoder_type": "Encoder4Editing", "start_from_latent_avg": True})
    with pytest.raises(CheckpointError, match="not supported"):
        load_encoder(sd, opts={"encoder_type": "BackboneEncoderUsingLastLayerIntoW"})
    holes = {k: v for k, v in sd.items() if not k.startswith("styles.3.")}
    with pytest.raises(CheckpointError, match="style heads"):
        load_encoder(holes, kind="psp")
    broken = dict(sd)
    broken["latlayer1.weight"] = torch.zeros(512, 128, 1, 1)
    with pytest.raises(CheckpointError, match="another shape"):
        load_encoder(broken, kind="psp")
    with pytest.raises(CheckpointError, match="input_layer.0.weight"):
        load_encoder({"linear.weight": torch.zeros(512, 512)}, kind="psp")
    with pytest.raises(ConfigError):
        load_encoder(sd, kind="restyle")


def test_device_follows_inputs(psp_and_e4e):
    # On the meta device any tensor created on CPU by mistake would raise.
    _, e4e = psp_and_e4e
    model = LatentEncoder(copy.deepcopy(e4e), torch.zeros(10, 32)).to("meta")
    out = model(torch.empty(2, 3, 64, 64, device="meta"))
    assert out.shape == (2, 10, 32) and out.device.type == "meta"
