"""Parity runs (dhr.reference): the reference preset from a given start code, with the reference's
quantities recorded and empty masks reported per image instead of NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from dhr.errors import ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.reference import reference_config, reference_start, run_reference
from dhr.refinement.hybrid import RefineConfig
from tests.conftest import shared_path

FAST = dict(refine=RefineConfig(steps=4, weight_steps=2, delta_format="fp32", feature_format="fp32"))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    with torch.no_grad():
        G.w_avg.copy_(G.mean_latent(256, generator=torch.Generator().manual_seed(1)))
        x = G(G.mapping(torch.randn(3, 32, generator=torch.Generator().manual_seed(2)))).clamp(-1, 1)
    return G, LPIPS("squeeze"), x


def _finite(run) -> bool:
    vals = [v for k, curve in run.losses.items() if k != "theta_updated" for v in curve]
    return all(math.isfinite(v) for v in vals) and (run.image is None or bool(torch.isfinite(run.image).all()))


def test_empty_masks_are_per_image_errors_never_nan(setup):
    G, lp, x = setup
    masks = torch.zeros(3, 1, 32, 32)
    masks[0, :, 4:28, 4:28] = 1  # a face
    masks[2] = 1  # nothing out of domain
    runs = run_reference(G, x, start="mean", perceptual=lp, coarse_perceptual=lp, masks=masks,
                         config=reference_config(**FAST))
    assert runs[0].error is None and runs[0].image is not None
    assert "no in-domain pixel" in runs[1].error and runs[1].image is None and runs[1].in_domain_fraction == 0
    assert "no out-of-domain pixel" in runs[2].error and runs[2].image is None
    assert all(_finite(r) for r in runs)
    alone = run_reference(G, x[:1], start="mean", perceptual=lp, coarse_perceptual=lp, masks=masks[:1],
                          config=reference_config(**FAST))[0]
    assert (alone.image - runs[0].image).abs().max() <= 1e-4  # the failed images changed nothing


def test_records_the_reference_loss_terms(setup):
    G, lp, x = setup
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, :, 6:26, 8:24] = 1
    run = run_reference(G, x[:1], start="mean", perceptual=lp, coarse_perceptual=lp, masks=masks,
                        config=reference_config(**FAST))[0]
    L = run.losses
    assert len(L["loss_in"]) == 4 and L["theta_updated"] == [True, True, False, False]
    for k in range(4):  # the reference's sums: 1 * MSE + 1 * LPIPS per region
        assert L["loss_in"][k] == pytest.approx(L["l2_in"][k] + L["lpips_in"][k], rel=1e-6)
        assert L["loss_out"][k] == pytest.approx(L["l2_out"][k] + L["lpips_out"][k], rel=1e-6)
    assert torch.equal(run.start, G.w_avg.expand(G.num_ws, -1))  # mean start = the generator's w_avg
    assert torch.equal(run.inversion.ws, run.start)  # the code is never refined
    assert run.inversion.render_spec.delta_format == "fp32"


def test_coarse_path_records_masks_superpixels_scores_and_error_maps(setup):
    G, lp, x = setup
    cfg = reference_config(coarse=reference_config().coarse.__class__.coarse(steps=3, n_mean_samples=256), **FAST)
    runs = run_reference(G, x[:2], start="mean", perceptual=lp, coarse_perceptual=lp, config=cfg)
    for r in runs:
        d = r.domain
        assert d.superpixels.shape == (32, 32) and int(d.superpixels.min()) == 1
        assert d.scores.shape == (int(d.superpixels.max()),)
        assert len(d.error_maps) == len(lp.layer_maps(x[:1], x[:1])) and d.coarse.shape == (3, 32, 32)
        assert torch.equal(r.mask, d.mask_superpixel)  # no parser: m = m_s
        assert r.in_domain_fraction == pytest.approx(float(d.mask.mean()))
        assert _finite(r) and (r.error is None) == (0 < r.in_domain_fraction < 1)
    assert cfg.segment.slic_bgr and cfg.segment.tiny_superpixel == "reference"  # the reference's mask bugs


def test_start_codes(setup, tmp_path):
    G, _, _ = setup
    w = torch.randn(G.num_ws, G.style_dim)
    assert torch.equal(reference_start(G, w, 2)[1], w)
    assert torch.equal(reference_start(G, w[0], 1)[0], w[0].expand(G.num_ws, -1))
    torch.save(w, tmp_path / "w.pt")
    assert torch.equal(reference_start(G, tmp_path / "w.pt", 1)[0], w)
    from safetensors.torch import save_file

    save_file({"latent": w}, str(tmp_path / "w.safetensors"))
    assert torch.equal(reference_start(G, str(tmp_path / "w.safetensors"), 1)[0], w)
    with pytest.raises(ShapeError, match="num_ws"):
        reference_start(G, torch.randn(3, G.style_dim), 1)
    with pytest.raises(ConfigError, match="neither 'mean'"):
        reference_start(G, "median", 1)


def test_cli_writes_records_and_exit_code(setup, tmp_path, monkeypatch):
    from dhr.cli import build_app
    from dhr.models.checkpoint import save_pretrained

    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(shared_path("weights", "lpips")))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    G, lp, x = setup
    save_pretrained(G, tmp_path / "gen")
    paths, masks = [], []
    for i in range(2):
        p = tmp_path / f"face{i}.png"
        Image.fromarray(((x[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(p)
        m = np.zeros((32, 32), np.uint8)
        if i == 0:
            m[4:28, 4:28] = 255
        Image.fromarray(m).save(tmp_path / f"mask{i}.png")
        paths.append(str(p))
        masks += ["--mask", str(tmp_path / f"mask{i}.png")]
    res = CliRunner().invoke(build_app(), ["reference", *paths, "-g", str(tmp_path / "gen"), *masks, "--lpips",
                                           "squeeze", "--coarse-lpips", "squeeze", "--set", "refine.steps=2",
                                           "--set", "refine.weight_steps=1", "-o", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output  # one image had an empty mask
    summary = json.loads((tmp_path / "out" / "reference.json").read_text())
    assert summary["images"][0]["error"] is None and "no in-domain pixel" in summary["images"][1]["error"]
    rec = json.loads((tmp_path / "out" / "face0.json").read_text())
    assert len(rec["losses"]["lpips_out"]) == 2 and "image" in rec["tensors"]
    # Bad options and files are usage errors before any work, not crashes after it.
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    common = [*paths, "-g", str(tmp_path / "gen"), "--coarse-lpips", "squeeze", "--set", "refine.steps=2"]
    for extra, words in ((["--lpips", "nope", "--mask", masks[1], "--mask", masks[3]], "LPIPS network 'nope'"),
                         (["--lpips", "squeeze", "--mask", str(tmp_path / "junk.png"), "--mask", masks[3]],
                          "junk.png"),
                         (["--lpips", "squeeze", "-o", str(tmp_path / "taken")], "is a file")):
        res = CliRunner().invoke(build_app(), ["reference", *common, *extra])
        assert res.exit_code == 2 and words in res.output, (extra, res.output)


def test_a_diverged_refinement_is_the_image_error(setup):
    G, lp, x = setup
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, :, 4:28, 4:28] = 1
    cfg = reference_config(refine=RefineConfig(steps=3, weight_steps=2, feature_lr=1e12, weight_lr=1e12,
                                               delta_format="fp32", feature_format="fp32"))
    run = run_reference(G, x[:1], start="mean", perceptual=lp, coarse_perceptual=lp, masks=masks, config=cfg)[0]
    assert run.error is not None and "diverged" in run.error


def test_rosinality_64_fixture_mean_start():
    """The 64 px rosinality fixture generator from its mean latent, on a real aligned face (short
    budgets): masks, scores and maps are recorded; an empty mask is an error, never NaN."""
    from dhr.io.image import load_image, uint8_to_tensor
    from dhr.models.checkpoint import load_generator

    ckpt = shared_path("fixtures", "stylegan2_rosinality_64_cm1", "g_ema.pt")
    lw = shared_path("weights", "lpips")
    faces = shared_path("datasets", "aligned")
    G = load_generator(ckpt).eval()
    lp = LPIPS("squeeze", backbone=lw / "squeezenet1_1_features.safetensors", linear=lw / "v0.1" / "squeeze.pth")
    img = uint8_to_tensor(load_image(sorted(faces.glob("hyperstyle-*.jpg"))[0]).pixels)[None]
    x = F.interpolate(img, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    cfg = reference_config(coarse=reference_config().coarse.__class__.coarse(steps=2),
                           refine=RefineConfig(steps=2, weight_steps=1, delta_format="fp32", feature_format="fp32"))
    run = run_reference(G, x, start="mean", perceptual=lp, coarse_perceptual=lp, config=cfg)[0]
    assert torch.allclose(run.start[0], G.w_avg)  # rosinality's latent_avg
    assert run.domain.scores is not None and len(run.domain.error_maps) == 7
    assert _finite(run)
    assert (run.error is None) == (0 < run.in_domain_fraction < 1)
