from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr.errors import CheckpointError, ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS, LPIPS_CHANNELS
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def squeeze() -> LPIPS:
    w = shared_path("weights", "lpips")
    return LPIPS("squeeze", backbone=w / "squeezenet1_1_features.safetensors", linear=w / "v0.1" / "squeeze.pth")


def _astronaut256() -> torch.Tensor:
    import skimage.data
    from PIL import Image

    a = Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_random_backbone_properties(net):
    torch.manual_seed(0)
    lp = LPIPS(net)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(lp(x, x), torch.zeros(2))
    assert torch.allclose(lp(x, y), lp(y, x), atol=1e-6)
    maps = lp.layer_maps(x, y)
    assert len(maps) == len(LPIPS_CHANNELS[net])
    assert all(m.shape[:2] == (2, 1) for m in maps)
    assert torch.allclose(sum(m.mean(dim=[1, 2, 3]) for m in maps), lp(x, y))
    assert lp.spatial(x, y).shape == (2, 1, 64, 64)
    assert not any(p.requires_grad for p in lp.parameters())


def test_squeeze_matches_published_figures(squeeze):
    x = _astronaut256()
    assert squeeze(x, x).item() == 0.0
    # Figure from ../shared/weights/lpips/README.md: astro256 vs horizontal flip = 0.5999838 (ONNX reference).
    assert squeeze(x, x.flip(-1)).item() == pytest.approx(0.5999838, abs=2e-6)


def test_squeeze_matches_onnx_reference(squeeze):
    onnx_ref = pytest.importorskip("onnx.reference", reason="onnx (dev extra) evaluates the reference graph")
    sess = onnx_ref.ReferenceEvaluator(str(shared_path("weights", "lpips", "lpips_sq.onnx")))
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for h, w, sigma in [(48, 40, 0.1), (33, 47, 0.03), (64, 64, 0.3)]:
        x = torch.rand(1, 3, h, w, generator=g)
        y = (x + sigma * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)
        (ref,) = sess.run(None, {"ref": ((x - mean) / std).numpy(), "dist": ((y - mean) / std).numpy()})
        assert squeeze(2 * x - 1, 2 * y - 1).item() == pytest.approx(float(ref[0]), abs=1e-6)


def test_squeeze_monotone_under_growing_distortion(squeeze):
    x = _astronaut256()[:, :, 64:192, 64:192]
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    d = [squeeze(x, (x + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_gradients_flow_to_input_only(squeeze):
    x = _astronaut256()[:, :, :64, :64].requires_grad_(True)
    y = torch.zeros_like(x)
    squeeze(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in squeeze.parameters())


def test_errors():
    with pytest.raises(ConfigError):
        LPIPS("resnet")  # type: ignore[arg-type]
    lp = LPIPS("squeeze")
    with pytest.raises(ShapeError):
        lp(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 32))
    with pytest.raises(ShapeError):
        lp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(CheckpointError, match="another backbone"):
        lp.load_linear({f"lin{k}.model.1.weight": torch.zeros(1, 7, 1, 1) for k in range(7)})
    with pytest.raises(CheckpointError, match="missing keys"):
        LPIPS("alex", backbone={"0.weight": torch.zeros(64, 3, 11, 11)})


def test_corrupt_file(tmp_path):
    bad = tmp_path / "squeeze.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="squeeze.pth"):
        LPIPS("squeeze", linear=bad)


def test_double_precision_stays_double():
    # the fp32 upcast of the taps is for autocast's 16-bit outputs only; float64 runs keep their precision
    from dhr.metrics.lpips import LPIPS

    torch.manual_seed(0)
    lp = LPIPS("squeeze").double()
    x, y = (torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1 for _ in range(2))
    assert lp(x, y).dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in lp.taps_of(x))
