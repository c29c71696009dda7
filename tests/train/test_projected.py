"""Projected discriminator, the projected training recipe, milestones and quality curves."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import ConfigError
from dhr.metrics.lpips import squeezenet1_1_features
from dhr.train.data import prepare_dataset
from dhr.train.gan import Trainer, TrainConfig, train
from dhr.train.projected import ProjectedDiscriminator, hinge_d_loss, hinge_g_loss


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return squeezenet1_1_features()


@pytest.fixture
def faces(tmp_path):
    """40 random 'crops' named like UTKFace; a few land in the 4 % held-out split by name hash."""
    rng = np.random.default_rng(0)
    d = tmp_path / "faces"
    d.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"{20 + i}_{i % 2}_0_{i:04d}.jpg.chip.jpg")
    return d


@pytest.fixture
def lpips_files(tmp_path, backbone):
    from dhr.metrics.lpips import LPIPS

    lp = LPIPS("squeeze")
    back, lin = tmp_path / "sq.pth", tmp_path / "lin.pth"
    torch.save(backbone.state_dict(), back)
    torch.save({f"lin{k}.model.1.weight": p.detach().clone() for k, p in enumerate(lp.lins)}, lin)
    return str(back), str(lin)


def _cfg(data, lpips_files, out, **kw):
    kw = {"discriminator": "projected", "proj_size": 64, **kw}
    return TrainConfig(data=str(data), out=str(out), resolution=32, style_dim=16, n_mapping=1, channel_base=128,
                       channel_max=16, enc_channels=8, batch=4, lpips_backbone=lpips_files[0],
                       lpips_linear=lpips_files[1], **kw)


def test_only_the_heads_train_and_gradients_reach_the_image(backbone):
    D = ProjectedDiscriminator(backbone, input_size=64).eval()  # eval: no spectral-norm power iteration
    trainable = {id(p) for p in D.trainable_parameters()}
    assert trainable and all(p.requires_grad == (id(p) in trainable) for p in D.parameters())
    assert all(not p.requires_grad for p in D.backbone.parameters())
    img = torch.rand(2, 3, 32, 32, requires_grad=True) * 2 - 1
    img.retain_grad()
    logits = D(img)
    assert len(logits) == 3 and all(x.shape[0] == 2 and x.shape[1] == 1 for x in logits)
    hinge_g_loss(logits).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    detached = D(img.detach(), detach_features=True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(logits, detached))
    assert not any(x.grad_fn is None for x in detached)  # heads still have a graph


def test_projections_are_fixed_by_seed_and_scales_set_once(backbone):
    a = ProjectedDiscriminator(backbone, input_size=64, seed=3)
    b = ProjectedDiscriminator(backbone, input_size=64, seed=3)
    c = ProjectedDiscriminator(backbone, input_size=64, seed=4)
    assert torch.equal(a.ccm[0].weight, b.ccm[0].weight)
    assert not torch.equal(a.ccm[0].weight, c.ccm[0].weight)
    assert not a.scales.any()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    feats = a.features(x)
    assert a.scales.all()
    assert all(abs(float(f.square().mean()) - 1) < 1e-3 for f in feats)  # unit RMS on the first batch
    first = a.scales.clone()
    a.features(x * 0.1)
    assert torch.equal(a.scales, first)  # not recalibrated later
    assert "scales" in a.state_dict()


def test_hinge_losses():
    real = [torch.full((2, 1, 3, 3), 2.0)]
    fake = [torch.full((2, 1, 3, 3), -2.0)]
    assert float(hinge_d_loss(real, fake)) == 0.0  # both beyond the margin
    assert float(hinge_d_loss(fake, real)) == pytest.approx(6.0)
    assert float(hinge_g_loss(fake)) == pytest.approx(2.0)


def test_projected_recipe_trains_resumes_and_keeps_the_backbone(faces, lpips_files, tmp_path, backbone):
    cfg = _cfg(faces, lpips_files, tmp_path / "run")
    train_set, _, _ = prepare_dataset(faces, 32, val_fraction=0.0)
    tr = Trainer(cfg)
    g0 = {k: v.clone() for k, v in tr.G.state_dict().items()}
    h0 = [p.clone() for p in tr.D.trainable_parameters()]
    for _ in range(2):
        logs = tr.train_step(train_set)
    assert all(np.isfinite(v) for v in logs.values()) and "r1" not in logs
    assert any(not torch.equal(g0[k], v) for k, v in tr.G.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(h0, tr.D.trainable_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), tr.D.backbone.state_dict().values()))
    tr.save()
    nxt = tr.train_step(train_set)
    tr2 = Trainer(cfg)
    tr2.load(tmp_path / "run" / "ckpt.pt")
    again = tr2.train_step(train_set)
    assert again["loss_d"] == pytest.approx(nxt["loss_d"], rel=1e-5)
    with pytest.raises(ConfigError, match="another configuration"):
        Trainer(_cfg(faces, lpips_files, tmp_path / "run", proj_size=96)).load(tmp_path / "run" / "ckpt.pt")
    with pytest.raises(ConfigError, match="unknown discriminator"):
        Trainer(_cfg(faces, lpips_files, tmp_path / "x", discriminator="patch"))


def test_milestones_and_curve(faces, lpips_files, tmp_path):
    from dhr.train.curve import plot_curves, score_runs

    out = train(_cfg(faces, lpips_files, tmp_path / "run", milestone_kimg=0.008), kimg=0.016, sample_every=1000)
    files = sorted((out / "milestones").glob("g_ema_*.pt"))
    assert len(files) == 2  # at 8 and 16 images
    st = [torch.load(f, weights_only=True) for f in files]
    assert [s["kimg"] for s in st] == [0.008, 0.016]
    assert 0 < st[0]["cpu_seconds"] < st[1]["cpu_seconds"]
    lp_dir = tmp_path / "lp"
    (lp_dir / "v0.1").mkdir(parents=True)
    from dhr.metrics.lpips import LPIPS

    lp = LPIPS("squeeze", backbone=lpips_files[0], linear=lpips_files[1])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in lp.features.state_dict().items()}, lp_dir / "squeezenet1_1_features.safetensors")
    Image.open  # noqa: B018 (keep PIL imported for the fixture)
    torch.save(torch.load(lpips_files[1], weights_only=True), lp_dir / "v0.1" / "squeeze.pth")
    cache = score_runs({"tiny": out}, faces, lp_dir, {}, n=200, val_fraction=0.25, save=tmp_path / "c.json")
    pts = cache["tiny"]
    assert [p["kimg"] for p in pts] == [0.008, 0.016] and all(np.isfinite(p["kid"]) for p in pts)
    assert json.loads((tmp_path / "c.json").read_text()) == cache
    again = score_runs({"tiny": out}, faces, lp_dir, cache, n=200, val_fraction=0.25)
    assert again["tiny"] == pts  # cached points are not rescored
    plot_curves(cache, tmp_path / "curve.png", extra={"v1": [{"kimg": 0.01, "kid": 1.0}]})
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_no_usable_images_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="no usable images"):
        prepare_dataset(tmp_path, 32)


def test_adv_weight_scales_the_generator_adversarial_term(faces, lpips_files, tmp_path):
    """With adv_weight=0 the generator/encoder update ignores D; with the default it does not."""
    train_set, _, _ = prepare_dataset(faces, 32, val_fraction=0.0)

    def g_after_step(adv_weight: float, d_scale: float) -> dict:
        torch.manual_seed(0)
        tr = Trainer(_cfg(faces, lpips_files, tmp_path / f"r{adv_weight}{d_scale}", adv_weight=adv_weight, d_lr=0.0))
        with torch.no_grad():
            for p in tr.D.trainable_parameters():
                p.mul_(d_scale)
        tr.train_step(train_set)
        return {k: v.clone() for k, v in tr.G.state_dict().items()}

    same = [g_after_step(0.0, s) for s in (1.0, 3.0)]
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    diff = [g_after_step(1.0, s) for s in (1.0, 3.0)]
    assert any(not torch.equal(diff[0][k], diff[1][k]) for k in diff[0])


def test_checkpoints_from_before_adv_weight_resume_at_its_default(faces, lpips_files, tmp_path):
    cfg = _cfg(faces, lpips_files, tmp_path / "old")
    tr = Trainer(cfg)
    st = tr.state()
    arch = json.loads(st["arch"])
    del arch["adv_weight"]  # as written before the field existed
    st["arch"] = json.dumps(arch, sort_keys=True)
    torch.save(st, tmp_path / "old.pt")
    Trainer(cfg).load(tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="adv_weight"):
        Trainer(_cfg(faces, lpips_files, tmp_path / "old", adv_weight=0.1)).load(tmp_path / "old.pt")


def test_encoder_stage_trains_only_the_encoder_against_the_ema_generator(faces, lpips_files, tmp_path):
    train_set, _, _ = prepare_dataset(faces, 32, val_fraction=0.0)
    tr = Trainer(_cfg(faces, lpips_files, tmp_path / "enc", stage="encoder"))
    with torch.no_grad():  # make G and G_ema differ: the encoder must follow the exported (EMA) one
        for p in tr.G.parameters():
            p.add_(0.5)
    frozen = {k: v.clone() for k, v in list(tr.G.state_dict().items()) + [("ema." + k, v) for k, v in tr.G_ema.state_dict().items()]}
    e0 = [p.clone() for p in tr.E.parameters()]

    def not_this_one(*a, **k):
        raise AssertionError("the encoder stage must use the exported EMA generator, not the training G")

    tr.G.forward = tr.G.mapping.forward = not_this_one
    first = tr.train_step(train_set)
    for _ in range(5):
        logs = tr.train_step(train_set)
    assert tr.images_seen == 0 and tr.encoder_images == 6 * 4 and tr.progress_images == 24
    after = dict(list(tr.G.state_dict().items()) + [("ema." + k, v) for k, v in tr.G_ema.state_dict().items()])
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(not torch.equal(a, b) for a, b in zip(e0, tr.E.parameters()))
    assert set(logs) >= {"loss_e", "mse", "lpips", "latent"} and np.isfinite(logs["loss_e"])
    assert first["mse"] > 0
    with pytest.raises(ConfigError, match="unknown training stage"):
        Trainer(_cfg(faces, lpips_files, tmp_path / "bad", stage="decoder"))


def test_warm_start_from_another_runs_checkpoint(faces, lpips_files, tmp_path):
    train_set, _, _ = prepare_dataset(faces, 32, val_fraction=0.0)
    joint = Trainer(_cfg(faces, lpips_files, tmp_path / "joint"))
    joint.train_step(train_set)
    joint.save()
    enc = Trainer(_cfg(faces, lpips_files, tmp_path / "enc", stage="encoder"))
    enc.warm_start(tmp_path / "joint" / "ckpt.pt")
    for k, v in joint.G_ema.state_dict().items():  # the exported (EMA) generator, in both slots
        assert torch.equal(enc.G_ema.state_dict()[k], v) and torch.equal(enc.G.state_dict()[k], v)
    assert all(torch.equal(a, b) for a, b in zip(joint.E.parameters(), enc.E.parameters()))
    assert enc.images_seen == joint.images_seen == 4
    with pytest.raises(ConfigError, match="another architecture"):
        Trainer(dataclasses.replace(_cfg(faces, lpips_files, tmp_path / "wide"), enc_channels=4)).warm_start(tmp_path / "joint" / "ckpt.pt")
