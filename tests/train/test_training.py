from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import ConfigError
from dhr.metrics.lpips import LPIPS
from dhr.train.augment import diff_augment
from dhr.train.data import is_validation, parse_utkface_name, prepare_dataset
from dhr.train.gan import Trainer, TrainConfig


@pytest.fixture
def face_folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "faces"
    d.mkdir()
    for i, (age, g) in enumerate([(25, 0), (40, 1), (8, 0), (63, 1), (31, 1), (19, 0)]):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(d / f"{age}_{g}_2_2017{i:04d}.jpg.chip.jpg")
    (d / "broken.jpg").write_bytes(b"not an image")
    return d


@pytest.fixture
def lpips_files(tmp_path):
    torch.manual_seed(0)
    lp = LPIPS("squeeze")
    back, lin = tmp_path / "sq.pth", tmp_path / "lin.pth"
    torch.save(lp.features.state_dict(), back)
    torch.save({f"lin{k}.model.1.weight": p.detach().clone() for k, p in enumerate(lp.lins)}, lin)
    return str(back), str(lin)


def _cfg(face_folder, lpips_files, out, **kw):
    return TrainConfig(data=str(face_folder), out=str(out), resolution=32, style_dim=16, n_mapping=1,
                       channel_base=128, channel_max=16, enc_channels=8, batch=4,
                       lpips_backbone=lpips_files[0], lpips_linear=lpips_files[1], **kw)


def test_labels_and_split():
    assert parse_utkface_name("25_1_3_20170119.jpg.chip.jpg") == (25, 1, 3)
    assert parse_utkface_name("photo.jpg") is None
    names = [f"{i}_0_0_x.jpg" for i in range(2000)]
    frac = np.mean([is_validation(n, 0.1) for n in names])
    assert 0.07 < frac < 0.13
    assert [is_validation(n, 0.1) for n in names] == [is_validation(n, 0.1) for n in names]


def test_prepare_dataset_skips_unreadable(face_folder, tmp_path):
    train, val, skipped = prepare_dataset(face_folder, 32, tmp_path / "cache.npz", val_fraction=0.0)
    assert skipped == 1
    assert len(train) == 6 and len(val) == 0
    assert train.images.shape == (6, 32, 32, 3) and train.images.dtype == np.uint8
    assert sorted(train.ages.tolist()) == [8, 19, 25, 31, 40, 63]
    again, _, skipped2 = prepare_dataset(face_folder, 32, tmp_path / "cache.npz", val_fraction=0.0)
    assert skipped2 == 1 and np.array_equal(again.images, train.images)


def test_prepare_dataset_empty_folder(tmp_path):
    with pytest.raises(ConfigError, match="no images"):
        prepare_dataset(tmp_path, 32)


def test_diff_augment_is_differentiable():
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_train_steps_checkpoint_resume_and_refusal(face_folder, lpips_files, tmp_path):
    cfg = _cfg(face_folder, lpips_files, tmp_path / "run")
    train, _, _ = prepare_dataset(face_folder, 32, val_fraction=0.0)
    tr = Trainer(cfg)
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    logs = [tr.train_step(train) for _ in range(2)]
    assert all(np.isfinite(v) for entry in logs for v in entry.values())
    assert any(not torch.equal(before[k], v) for k, v in tr.G.state_dict().items())
    tr.save()
    nxt = tr.train_step(train)

    tr2 = Trainer(cfg)
    tr2.load(tmp_path / "run" / "ckpt.pt")
    assert tr2.step == 2 and tr2.images_seen == 8
    again = tr2.train_step(train)  # the saved RNG states make the resumed step identical
    assert again["loss_d"] == pytest.approx(nxt["loss_d"], rel=1e-5)

    other = Trainer(_cfg(face_folder, lpips_files, tmp_path / "run", lr=0.01))
    with pytest.raises(ConfigError, match="another configuration"):
        other.load(tmp_path / "run" / "ckpt.pt")


def test_training_needs_lpips(face_folder, tmp_path):
    with pytest.raises(ConfigError, match="lpips"):
        Trainer(TrainConfig(data=str(face_folder), out=str(tmp_path / "r")))


def test_write_held_out_matches_the_split(face_folder, tmp_path):
    from dhr.train.data import main, write_held_out

    names = sorted(p.name for p in face_folder.iterdir() if p.suffix == ".jpg")
    expected = [n for n in names if is_validation(n, 0.5)]
    written = write_held_out(face_folder, tmp_path / "val", fraction=0.5)
    assert [p.name for p in written] == expected
    assert all(p.is_symlink() and p.resolve() == (face_folder / p.name).resolve() for p in written)
    main(["held-out", str(face_folder), str(tmp_path / "val2"), "--fraction", "0.5", "--copy"])
    copied = sorted((tmp_path / "val2").iterdir())
    assert [p.name for p in copied] == expected and not any(p.is_symlink() for p in copied)


def test_sigterm_stops_training_with_a_checkpoint(face_folder, lpips_files, tmp_path, monkeypatch):
    import os
    import signal

    from dhr.train.gan import train

    real_step = Trainer.train_step

    def step_then_signal(self, data):
        logs = real_step(self, data)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    out = train(_cfg(face_folder, lpips_files, tmp_path / "run"), kimg=1.0, sample_every=1000)
    st = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert st["step"] == 3 and st["images_seen"] == 12
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
