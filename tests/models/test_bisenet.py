from __future__ import annotations

import pytest
import torch

from dhr.errors import CheckpointError, ShapeError
from dhr.models.bisenet import BISENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, BiSeNet


def _bn(p: str) -> list[str]:
    return [f"{p}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _conv(p: str) -> list[str]:
    return [f"{p}.weight"]  # every conv of this network is bias-free


def _official_keys() -> list[str]:
    """The ``79999_iter.pth`` key list, written out from face-parsing.PyTorch's model.py/resnet.py."""
    keys = _conv("cp.resnet.conv1") + _bn("cp.resnet.bn1")
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"cp.resnet.layer{layer}.{block}"
            keys += _conv(f"{p}.conv1") + _bn(f"{p}.bn1") + _conv(f"{p}.conv2") + _bn(f"{p}.bn2")
            if block == 0 and layer > 1:  # channels or stride change
                keys += _conv(f"{p}.downsample.0") + _bn(f"{p}.downsample.1")
    for arm in ("cp.arm16", "cp.arm32"):
        keys += _conv(f"{arm}.conv.conv") + _bn(f"{arm}.conv.bn") + _conv(f"{arm}.conv_atten") + _bn(f"{arm}.bn_atten")
    for cbr in ("cp.conv_head32", "cp.conv_head16", "cp.conv_avg"):
        keys += _conv(f"{cbr}.conv") + _bn(f"{cbr}.bn")
    keys += _conv("ffm.convblk.conv") + _bn("ffm.convblk.bn") + _conv("ffm.conv1") + _conv("ffm.conv2")
    for head in ("conv_out", "conv_out16", "conv_out32"):
        keys += _conv(f"{head}.conv.conv") + _bn(f"{head}.conv.bn") + _conv(f"{head}.conv_out")
    return keys


def test_official_key_list_and_shapes():
    with torch.device("meta"):
        sd = BiSeNet(19).state_dict()
    expected = _official_keys()
    assert len(expected) == len(set(expected))
    assert sorted(sd) == sorted(expected)
    shapes = {
        "cp.resnet.conv1.weight": (64, 3, 7, 7),
        "cp.resnet.layer4.0.downsample.0.weight": (512, 256, 1, 1),
        "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
        "cp.arm32.conv_atten.weight": (128, 128, 1, 1),
        "cp.conv_avg.conv.weight": (128, 512, 1, 1),
        "ffm.convblk.conv.weight": (256, 256, 1, 1),
        "ffm.conv1.weight": (64, 256, 1, 1),
        "conv_out.conv_out.weight": (19, 256, 1, 1),
        "conv_out16.conv.conv.weight": (64, 128, 3, 3),
        "conv_out32.conv_out.weight": (19, 64, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key


def test_class_names():
    assert len(BISENET_CLASSES) == 19
    assert BISENET_CLASSES[0] == "background" and BISENET_CLASSES[1] == "skin"
    assert BISENET_CLASSES[6] == "eye_g" and BISENET_CLASSES[17] == "hair" and BISENET_CLASSES[18] == "hat"


@pytest.fixture(scope="module")
def net() -> BiSeNet:
    torch.manual_seed(0)
    model = BiSeNet(19).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_forward_shapes_and_roundtrip(net, tmp_path):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits = net(x)
        main, aux16, aux32 = net.forward_all(x)
    assert logits.shape == main.shape == aux16.shape == aux32.shape == (2, 19, 64, 96)
    torch.testing.assert_close(logits, main)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "79999_iter.pth")
    loaded = BiSeNet.from_checkpoint(tmp_path / "79999_iter.pth")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits)
    with pytest.raises(ShapeError):
        net(torch.zeros(1, 4, 64, 64))


def test_parse_normalises_and_resizes_back(net):
    img = torch.rand(1, 3, 48, 40) * 2 - 1
    with torch.no_grad():
        out = net.parse(img, size=64)
        assert out.shape == (1, 19, 48, 40)
        same = torch.rand(1, 3, 64, 64) * 2 - 1
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(net.parse(same, size=64), net(((same + 1) / 2 - mean) / std))


def test_from_checkpoint_rejects_wrong_layout(net):
    state = dict(net.state_dict())
    state["cp.sp.conv1.conv.weight"] = torch.zeros(64, 3, 7, 7)  # the deleted spatial path
    with pytest.raises(CheckpointError, match="unexpected"):
        BiSeNet.from_checkpoint(state)


def test_device_follows_inputs():
    with torch.device("meta"):
        model = BiSeNet(19).eval()
    out = model.parse(torch.empty(1, 3, 40, 48, device="meta"), size=64)
    assert out.shape == (1, 19, 40, 48) and out.device.type == "meta"
