"""Tests of the occluder network's training data (dhr.train.occluders) and trainer (dhr.train.occluder)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import ShapeError
from dhr.segmentation.occluder import load_occluder_net
from dhr.train.data import is_validation
from dhr.train.occluder import make_batch, train_occluder, tune_split
from dhr.train.occluders import TRAIN_SHAPES, synthetic_occluder

R = 16


def faces(n: int = 4, size: int = R) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_samples_are_seeded_and_labelled():
    face, *others = faces()
    a = synthetic_occluder(face, np.random.default_rng(3), sources=others, p_clean=0.0)
    b = synthetic_occluder(face, np.random.default_rng(3), sources=others, p_clean=0.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.shapes == b.shapes
    assert a.image.shape == face.shape and a.image.dtype == np.uint8 and a.mask.shape == face.shape[:2]
    assert set(a.shapes) <= set(TRAIN_SHAPES)


def test_label_covers_the_changed_pixels():
    """Pixels labelled occluder changed; pixels far from every label (soft edges aside) did not."""
    face, *others = faces(size=64)
    changed_outside = []
    for seed in range(30):
        s = synthetic_occluder(face, np.random.default_rng(seed), sources=others, p_clean=0.0)
        if not s.mask.any():
            continue
        near = np.zeros_like(s.mask)
        ys, xs = np.nonzero(s.mask)
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                near[np.clip(ys + dy, 0, 63), np.clip(xs + dx, 0, 63)] = True
        diff = np.abs(s.image.astype(int) - face.astype(int)).max(-1) > 0
        changed_outside.append(float((diff & ~near).mean()))
        assert diff[s.mask].mean() > 0.5  # the occluder is really there
    assert changed_outside and max(changed_outside) < 0.05  # blurred rims and sub-pixel lines only


def test_clean_samples_and_bad_input():
    face, *others = faces()
    s = synthetic_occluder(face, np.random.default_rng(0), sources=others, p_clean=1.0)
    assert np.array_equal(s.image, face) and not s.mask.any() and s.shapes == ()
    with pytest.raises(ShapeError, match="uint8"):
        synthetic_occluder(face.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ShapeError, match="square"):
        synthetic_occluder(face[:8], np.random.default_rng(0))


def test_batch_shapes():
    from dhr.train.data import FaceDataset

    imgs = np.stack(faces(6))
    ds = FaceDataset(imgs, np.zeros(6), np.zeros(6), np.zeros(6), tuple(f"{i}_0_0_x.jpg" for i in range(6)))
    x, y = make_batch(ds, np.random.default_rng(0), 5)
    assert x.shape == (5, 3, R, R) and y.shape == (5, 1, R, R)
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_tune_split_never_uses_held_out_names():
    from dhr.train.data import FaceDataset

    names = tuple(f"{i}_0_0_{i}.jpg" for i in range(400))
    n = len(names)
    ds = FaceDataset(np.zeros((n, 2, 2, 3), np.uint8), np.zeros(n), np.zeros(n), np.zeros(n), names)
    train = ds.subset(np.array([i for i, nm in enumerate(names) if not is_validation(nm, 0.04)]))
    fit, tune = tune_split(train, 0.04, 0.05)
    assert len(fit) + len(tune) == len(train) and len(tune) > 0
    assert not set(fit.names) & set(tune.names)
    assert all(is_validation(nm, 0.09) and not is_validation(nm, 0.04) for nm in tune.names)


def test_training_runs_resumes_and_saves(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    for i, f in enumerate(faces(12, size=24)):
        Image.fromarray(f).save(data / f"{20 + i}_{i % 2}_0_2017{i:04d}.jpg.chip.jpg")
    out = tmp_path / "run"
    rep = train_occluder(data, out, steps=2, batch=2, size=R, save_every=1, n_tune=4)
    assert rep["steps_done"] == 2 and (out / "state.pt").is_file()
    with caplog.at_level(logging.INFO, logger="dhr.train.occluder"):
        rep = train_occluder(data, out, steps=3, batch=2, size=R, save_every=1, n_tune=4)
    assert "resumed at step 2" in caplog.text
    assert rep["steps_done"] == 3
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3
    net = load_occluder_net(out / "occluder")
    assert net(torch.zeros(1, 3, R, R)).shape == (1, 1, R, R)
    saved = json.loads((out / "report.json").read_text())
    assert saved["steps_done"] == 3 and len(saved["tune_pixel_figures"]) > 0


@pytest.mark.slow
@pytest.mark.shared
def test_tune_threshold_on_the_bundled_model(tmp_path):
    """The tune rule inside the model's full segmentation: a network that calls everything an occluder
    marks every clean pixel out of domain, so no threshold meets the cap and the fewest alarms win."""
    from tests.conftest import shared_path

    from dhr.models.native import save_pretrained
    from dhr.segmentation.occluder import OccluderNet, OccluderNetConfig, register_occluder_component
    from dhr.train.occluder import tune_threshold

    utk = shared_path("datasets", "utkface")
    data = tmp_path / "data"
    data.mkdir()
    picked = [p for p in sorted(utk.iterdir()) if is_validation(p.name, 0.07) and not is_validation(p.name, 0.04)][:3]
    for p in picked:
        (data / p.name).symlink_to(p)
    net = OccluderNet(OccluderNetConfig(channels=(2, 2, 2, 2)))
    with torch.no_grad():
        for prm in net.parameters():
            prm.zero_()
        net.head.bias.fill_(8.0)  # p ~ 1 everywhere
    register_occluder_component()
    save_pretrained(net, tmp_path / "occ")
    rep = tune_threshold("faces-64", tmp_path / "occ", data, n=1, thresholds=(0.5, 0.9), error_scales=(1.0, 2.0))
    assert rep["n"] == 1 and [(g["error_scale"], g["threshold"]) for g in rep["grid"]] == [
        (1.0, 0.5), (1.0, 0.9), (2.0, 0.5), (2.0, 0.9)]
    assert all(g["clean_ood_fraction"] == 1.0 and g["false_alarm"] == 1.0 for g in rep["grid"])
    assert rep["without"]["clean_ood_fraction"] < 0.5 and "no pair" in rep["rule"]
    cal = rep["calibrated_thresholds"]
    assert rep["best"]["theta_skin"] == round(cal["theta_skin"] * rep["best"]["error_scale"], 4)


def test_install_writes_the_model_json(tmp_path):
    from dhr.errors import ConfigError
    from dhr.models.native import save_pretrained
    from dhr.segmentation.occluder import OccluderNet, OccluderNetConfig, register_occluder_component
    from dhr.train.occluder import install_occluder

    register_occluder_component()
    save_pretrained(OccluderNet(OccluderNetConfig(channels=(2, 2, 2, 2))), tmp_path / "net")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"name": "m", "config": {"segment": {"theta_skin": 0.3}}}))
    install_occluder(model, tmp_path / "net", 0.65, info={"steps": 3}, thresholds={"theta_inner": 0.5})
    man = json.loads((model / "model.json").read_text())
    assert man["config"]["segment"] == {"theta_skin": 0.3, "theta_inner": 0.5, "occluder": "occluder",
                                        "occluder_threshold": 0.65}
    assert man["training"]["occluder"] == {"steps": 3} and (model / "occluder" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="model.json"):
        install_occluder(tmp_path / "net", tmp_path / "net", 0.5)
