from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dhr.errors import CheckpointError, ConfigError, ShapeError
from dhr.models.encoders.irse import (
    PSP_ID_CROP_256,
    ArcFace,
    CurricularFace,
    IRBackbone,
    build_ir_body,
    stage_end_indices,
)

# BatchNorm2d/1d (affine) state: weight, bias, running_mean, running_var, num_batches_tracked.
BN = 5


def _unit_keys(se: bool) -> int:
    # res_layer: 0 BN, 1 conv, 2 PReLU, 3 conv, 4 BN (+ 5.fc1, 5.fc2)
    return BN + 1 + 1 + 1 + BN + (2 if se else 0)


def _expected_backbone_keys(units: tuple[int, ...], se: bool, affine: bool) -> int:
    stem = 1 + BN + 1  # conv, BN, PReLU
    body = sum(units) * _unit_keys(se) + 3 * (1 + BN)  # 3 stage transitions carry conv+BN shortcuts
    head = BN + 2 + (BN if affine else 3)  # BN2d, Linear (weight, bias), BN1d
    return stem + body + head


def _meta(cls, *args, **kwargs):
    with torch.device("meta"):
        return cls(*args, **kwargs)


def test_arcface_official_layout():
    sd = _meta(ArcFace).state_dict()
    assert len(sd) == _expected_backbone_keys((3, 4, 14, 3), se=True, affine=True) == 397
    assert sd["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert sd["input_layer.2.weight"].shape == (64,)
    assert sd["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)
    assert sd["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)
    assert sd["body.3.res_layer.3.weight"].shape == (128, 128, 3, 3)
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert "output_layer.4.weight" in sd and "output_layer.4.running_var" in sd
    shortcut_units = sorted({int(k.split(".")[1]) for k in sd if ".shortcut_layer." in k})
    assert shortcut_units == [3, 7, 21]


def test_curricularface_official_layout():
    sd = _meta(CurricularFace).state_dict()
    assert len(sd) == _expected_backbone_keys((3, 13, 30, 3), se=False, affine=False) == 672
    assert not any(".res_layer.5." in k for k in sd)
    assert "output_layer.4.weight" not in sd and "output_layer.4.running_mean" in sd
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("body.")) == 48
    assert sorted({int(k.split(".")[1]) for k in sd if ".shortcut_layer." in k}) == [3, 16, 46]


def test_stage_ends_and_body_resolution():
    assert stage_end_indices(50) == (2, 6, 20, 23)
    assert stage_end_indices(152) == (2, 10, 46, 49)
    assert stage_end_indices((1, 2, 1, 1)) == (0, 2, 3, 4)
    body = build_ir_body((1, 1, 1, 1), "ir").eval()
    out = body(torch.randn(1, 64, 32, 32))
    assert out.shape == (1, 512, 2, 2)
    with pytest.raises(ConfigError):
        build_ir_body(34, "ir")
    with pytest.raises(ConfigError):
        build_ir_body((1, 0, 1, 1), "ir")
    with pytest.raises(ConfigError):
        build_ir_body(50, "se")


@pytest.fixture(scope="module")
def arcface() -> ArcFace:
    torch.manual_seed(0)
    model = ArcFace().eval()
    with torch.no_grad():  # non-trivial BN statistics so that a wrong load would show
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_arcface_roundtrip_old_style_file(arcface, tmp_path):
    # DataParallel prefix and no num_batches_tracked, as in files saved by PyTorch < 0.4.1.
    state = {"module." + k: v for k, v in arcface.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "model_ir_se50.pth")
    loaded = ArcFace.from_checkpoint(tmp_path / "model_ir_se50.pth")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        a, b = arcface(x), loaded(x)
    assert a.shape == (2, 512)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))


@pytest.fixture(scope="module")
def tiny() -> IRBackbone:
    torch.manual_seed(1)
    return IRBackbone((1, 1, 1, 1), mode="ir_se").eval()


def test_embed_psp_crop_convention(tiny):
    arcface = tiny
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    t, b, l, r = PSP_ID_CROP_256
    manual = F.adaptive_avg_pool2d(img[:, :, t:b, l:r], (112, 112))
    with torch.no_grad():
        torch.testing.assert_close(arcface.embed(img, crop="psp"), arcface(manual))
        # a 512 image is first pooled to 256 (pSp's face_pool)
        big = F.interpolate(img, scale_factor=2, mode="nearest")
        torch.testing.assert_close(arcface.embed(big, crop="psp"), arcface(manual), atol=1e-5, rtol=1e-5)
        # crop="none" pools the whole frame
        torch.testing.assert_close(arcface.embed(img), arcface(F.adaptive_avg_pool2d(img, (112, 112))))
    with pytest.raises(ConfigError):
        arcface.embed(img, crop="center")
    with pytest.raises(ShapeError):
        arcface(img)


def test_embed_gradient_and_dtype(tiny):
    arcface = tiny
    img = (torch.rand(1, 3, 128, 128) * 2 - 1).requires_grad_(True)
    arcface.embed(img).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    model64 = copy.deepcopy(arcface).double()
    with torch.no_grad():
        out = model64.embed(img.detach().double())
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), arcface.embed(img.detach()), atol=1e-4, rtol=1e-4)
    assert isinstance(model64, IRBackbone)


def test_from_checkpoint_rejects_other_network(tmp_path):
    sd = _meta(CurricularFace).state_dict()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items()}
    with pytest.raises(CheckpointError, match="missing"):
        ArcFace.from_checkpoint(state)
    with pytest.raises(CheckpointError, match="does not exist"):
        ArcFace.from_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        ArcFace.from_checkpoint(tmp_path / "bad.pth")


def test_device_follows_inputs():
    with torch.device("meta"):
        model = IRBackbone((1, 1, 1, 1), mode="ir", affine=False).eval()
    out = model.embed(torch.empty(2, 3, 256, 256, device="meta"), crop="psp")
    assert out.shape == (2, 512) and out.device.type == "meta"
