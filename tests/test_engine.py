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


@pytest.mark.parametrize("method", ["dhr", "pti", "feature", "optim"])
def test_bf16_precision_optimises_in_bfloat16_and_stores_fp32_results(setup, method, monkeypatch):
    import dhr.devices

    monkeypatch.setattr(dhr.devices, "native_bf16", lambda device: True)  # no slowness warning on any CI CPU
    G, lp, enc, images = setup
    embed = {} if method == "optim" else {"embed": "optim"}
    # fp32 storage: nothing is quantised, so no re-render on storing (as_stored returns the result as is)
    embed.update(refine={"steps": 2, "weight_steps": 1, "delta_format": "fp32", "feature_format": "fp32"},
                 pti={"steps": 2, "delta_format": "fp32"})
    full = invert(G, images[:1], config=_cfg(method, **embed), perceptual=lp)[0]
    half = invert(G, images[:1], config=_cfg(method, precision="bf16", **embed), perceptual=lp)[0]
    assert half.meta["config"]["precision"] == "bf16" and full.meta["config"]["precision"] == "fp32"
    tensors = [half.image, half.ws, *half.weight_delta.values()] + ([half.feature] if half.feature is not None else [])
    assert all(t.dtype == torch.float32 for t in tensors)
    # the stored image is the full-precision render of the stored result (what a reloaded bundle shows)
    assert torch.equal(render(G, half), half.image)
    # bf16 arithmetic did happen (the result is not the fp32 one) and stays close to it
    name = {"dhr": "loss_out", "pti": "loss_in", "feature": "loss_out", "optim": "lpips"}[method]
    a, b = full.losses[name][-1], half.losses[name][-1]
    assert a != b and abs(a - b) / abs(a) < 0.1, (a, b)


def test_for_each_image_keeps_order_and_uses_threads():
    import threading

    from dhr.engine import for_each_image

    names = []

    def fn(i):
        names.append(threading.current_thread().name)
        return i * i

    assert for_each_image(fn, 5, workers=3) == [0, 1, 4, 9, 16]
    assert all(n.startswith("dhr-image") for n in names)
    names.clear()
    assert for_each_image(fn, 2, workers=1) == [0, 1] and names == [threading.current_thread().name] * 2

    def bad(i):
        if i >= 2:
            raise ValueError(f"image {i}")
        return i

    with pytest.raises(ValueError, match="image 2"):
        for_each_image(bad, 4, workers=2)


def test_a_batch_segmented_in_threads_equals_one_after_the_other(setup, monkeypatch):
    import dhr.engine as engine

    G, lp, enc, images = setup
    batch = torch.cat([images, images.flip(-1)])
    real = engine.for_each_image
    cfg = _cfg("dhr", segment={"n_segments": 12})

    def run(workers):
        monkeypatch.setattr(engine, "for_each_image", lambda fn, b: real(fn, b, workers=workers))
        return invert(G, batch, config=cfg, perceptual=lp, encoder=enc)

    for a, b in zip(run(1), run(4)):
        assert torch.equal(a.domain.mask, b.domain.mask) and torch.equal(a.domain.scores, b.domain.scores)
        assert torch.equal(a.image, b.image)


def test_bf16_covers_every_optimisation_stage_and_nothing_else(setup, monkeypatch):
    import dhr.devices
    import dhr.embed.optimize as optimize
    import dhr.engine as engine
    import dhr.segmentation.domain as domain

    monkeypatch.setattr(dhr.devices, "native_bf16", lambda device: True)
    G, lp, enc, images = setup
    seen: dict[str, list[bool]] = {}

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            seen.setdefault(name, []).append(torch.is_autocast_enabled("cpu"))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    for module, name in ((engine, "refine_dhr"), (engine, "refine_pti"), (engine, "refine_feature"),
                         (optimize, "optimize_latent"), (domain, "segment"), (engine, "as_stored")):
        spy(module, name)
    import dhr.embed.encoder as encoder_mod
    spy(encoder_mod, "encode")
    invert(G, images[:1], config=_cfg("dhr", precision="bf16"), perceptual=lp, encoder=enc)
    invert(G, images[:1], config=_cfg("dhr", precision="bf16", embed="optim"), perceptual=lp)
    for method in ("pti", "feature"):
        invert(G, images[:1], config=_cfg(method, precision="bf16"), perceptual=lp, encoder=enc)
    assert seen["encode"] and all(seen["encode"])
    assert len(seen["optimize_latent"]) == 3 and all(seen["optimize_latent"])  # embed (once) + coarse (twice)
    for name in ("refine_dhr", "refine_pti", "refine_feature"):
        assert seen[name] and all(seen[name]), name
    assert seen["segment"] and not any(seen["segment"])  # the segmentation and storing stay fp32
    assert seen["as_stored"] and not any(seen["as_stored"])
    seen.clear()
    invert(G, images[:1], config=_cfg("dhr"), perceptual=lp, encoder=enc)
    assert not any(v for vals in seen.values() for v in vals)  # fp32: autocast never on
