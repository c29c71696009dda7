from __future__ import annotations

import pytest
import torch
from torch import nn

from dhr.config import InvertConfig
from dhr.engine import invert, render
from dhr.errors import ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig


class TinyEncoder(nn.Module):
    def __init__(self, num_ws: int, dim: int) -> None:
        super().__init__()
        self.num_ws, self.dim = num_ws, dim
        self.fc = nn.Linear(3 * 8 * 8, num_ws * dim)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return self.fc(x).reshape(-1, self.num_ws, self.dim)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    lp = LPIPS("squeeze")
    enc = TinyEncoder(G.num_ws, 32)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    return G, lp, enc, images


def _cfg(method, **kw):
    base = {
        "method": method,
        "optim": {"steps": 2, "n_mean_samples": 64, "loss_resolution": 32, "init": "mean"},
        "coarse": {"steps": 2, "n_mean_samples": 64, "loss_resolution": 32},
        "segment": {"n_segments": 8},
        "refine": {"steps": 2, "weight_steps": 1},
        "pti": {"steps": 2},
    }
    base.update(kw)
    return InvertConfig.from_dict(base)


def test_dhr_full_pipeline_with_encoder(setup):
    G, lp, enc, images = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    stages = set()
    invs = invert(G, images, config=_cfg("dhr"), perceptual=lp, encoder=enc,
                  progress=lambda stage, step, total, info: stages.add(stage))
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert stages == {"coarse", "refine"}
    assert len(invs) == 2
    for inv in invs:
        assert inv.method == "dhr" and inv.meta["embed"] == "encoder"
        t = inv.meta["timings"]
        assert {"embed_s", "coarse_s", "segment_s", "refine_s", "total_s"} <= set(t)
        assert inv.meta["config"]["method"] == "dhr" and len(inv.meta["model_sha256"]) == 64
        assert inv.domain is not None and inv.domain.coarse is not None
        assert torch.allclose(render(G, inv), inv.image, atol=1e-5)


@pytest.mark.parametrize("method", ["pti", "feature", "encoder", "optim"])
def test_other_methods(setup, method):
    G, lp, enc, images = setup
    invs = invert(G, list(images), config=_cfg(method), perceptual=lp, encoder=enc if method != "optim" else None)
    assert [i.method for i in invs] == [method, method]
    assert invs[0].meta["embed"] == ("optim" if method == "optim" else "encoder")
    assert (invs[0].feature is not None) == (method == "feature")
    assert bool(invs[0].weight_delta) == (method == "pti")
    assert torch.allclose(render(G, invs[1]), invs[1].image, atol=1e-5)


def test_user_masks_skip_segmentation(setup):
    G, lp, enc, images = setup
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 4:28, 4:28] = 1
    invs = invert(G, images, config=_cfg("dhr"), perceptual=lp, encoder=enc, masks=masks)
    assert "coarse_s" not in invs[0].meta["timings"]
    assert torch.equal(invs[0].domain.mask, masks[0])


def test_errors_before_any_optimisation(setup):
    G, lp, enc, images = setup
    calls = []
    prog = lambda *a: calls.append(a)  # noqa: E731
    with pytest.raises(ShapeError, match="32x32"):
        invert(G, images[:, :, :16, :16], config=_cfg("dhr"), perceptual=lp, encoder=enc, progress=prog)
    with pytest.raises(ShapeError, match="channels"):
        invert(G, images[:, :1], config=_cfg("dhr"), perceptual=lp, encoder=enc, progress=prog)
    with pytest.raises(ShapeError, match="empty"):
        invert(G, images, config=_cfg("dhr"), perceptual=lp, encoder=enc, masks=torch.zeros(2, 1, 32, 32),
               progress=prog)
    with pytest.raises(ConfigError, match="valid"):
        invert(G, images, config=_cfg("dhr", refine={"feature_resolution": 64}), perceptual=lp, encoder=enc,
               progress=prog)
    with pytest.raises(ConfigError, match="encoder"):
        invert(G, images, config=_cfg("pti", embed="encoder"), perceptual=lp, progress=prog)
    with pytest.raises(ConfigError, match="w_avg"):  # zero w_avg (no checkpoint average)
        invert(G, images, config=_cfg("optim", optim={"init": "w_avg", "steps": 2}), perceptual=lp, progress=prog)
    no_map = Generator(G.config).eval()
    no_map.mapping = nn.Identity()  # a converted synthesis-only network
    with pytest.raises(ConfigError, match="mapping"):
        invert(no_map, images, config=_cfg("dhr"), perceptual=lp, encoder=enc, progress=prog)
    with pytest.raises(ConfigError, match="one entry"):
        invert(G, images, config=_cfg("dhr"), perceptual=lp, encoder=enc, parsing=[None], progress=prog)
    assert calls == []


@pytest.mark.parametrize("method", ["dhr", "pti", "feature"])
def test_results_are_stored_so_a_saved_bundle_renders_the_same_image(setup, tmp_path, method):
    from dhr.bundle import load_bundle, save_bundle

    G, lp, enc, images = setup
    inv = invert(G, images[:1], config=_cfg(method, refine={"steps": 2, "weight_steps": 1, "weight_lr": 0.01,
                                                             "delta_format": "int4"}, pti={"steps": 2, "lr": 0.01,
                                                                                          "delta_format": "int4"}),
                 perceptual=lp, encoder=enc)[0]
    save_bundle(inv, tmp_path / method)
    assert torch.equal(load_bundle(tmp_path / method, model=G).image, inv.image)
