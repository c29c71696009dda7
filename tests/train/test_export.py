"""Tests of dhr.train.export on a tiny random model: direction units, landmark fits, atomic export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dhr.train.export as export
import dhr.train.landmark_labels as landmark_labels
from dhr.editing import Direction, DirectionSet
from dhr.models.checkpoint import save_pretrained
from dhr.models.small_encoder import SmallEncoder
from dhr.models.small_nets import AttributeClassifier, ClassifierConfig, PerceptualConfig, TinyPerceptual
from dhr.models.stylegan2 import Generator
from dhr.models.zoo import register_small_components
from dhr.train.gan import TrainConfig
from dhr.train.landmark_labels import LANDMARK_ATTRIBUTES, LandmarkLabels

CFG = TrainConfig(resolution=32, style_dim=16, n_mapping=1, channel_base=128, channel_max=16, enc_channels=8)


def _nets(seed: int = 0):
    register_small_components()
    torch.manual_seed(seed)
    G = Generator(CFG.generator_config()).eval()
    G.w_avg.copy_(G.mean_latent(256, generator=torch.Generator().manual_seed(seed)))
    E = SmallEncoder(CFG.encoder_config()).eval()
    C = AttributeClassifier(ClassifierConfig(resolution=32, channels=(8, 8))).eval()
    with torch.no_grad():  # centre the random gender head so that samples fall on both sides of 0.5
        z = torch.randn(256, 16, generator=torch.Generator().manual_seed(seed))
        C.head.bias[1] -= C(G(G.mapping(z)).clamp(-1, 1))["female_logit"].median()
    return G, E, C


def _fake_labels(codes: torch.Tensor, detected: np.ndarray, seed: int = 0) -> tuple[LandmarkLabels, dict]:
    """Labels that are linear in the encoder codes (plus garbage where nothing was detected)."""
    rng = np.random.default_rng(seed)
    x = codes.double().numpy()
    pcs = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:2]  # well-spread axes of the codes
    axes = {k: rng.normal(size=2) @ pcs for k in LANDMARK_ATTRIBUTES}
    scores = {k: codes.double().numpy() @ u for k, u in axes.items()}
    for v in scores.values():
        v[~detected] = rng.normal(size=(~detected).sum()) * 1e3
    n = len(detected)
    return LandmarkLabels(scores, np.zeros((n, 68, 2), np.float32), detected, 256), axes


def test_fit_directions_units_and_landmark_boundaries():
    G, E, C = _nets()
    images = np.random.default_rng(1).integers(0, 255, (80, 32, 32, 3), dtype=np.uint8)
    detected = np.ones(80, bool)
    detected[::8] = False
    codes = export.encoder_codes(E, G, images)
    assert codes.shape == (80, 16)
    labels, _ = _fake_labels(codes, detected)
    dirs, report = export.fit_directions(G, C, n=400, seed=0, batch=200, encoder=E, landmark_images=images,
                                         landmark_labels=labels)
    named = ["age", "gender", *LANDMARK_ATTRIBUTES]
    assert set(named) | {"pc0", "sefa0"} <= set(dirs.names())
    for name in LANDMARK_ATTRIBUTES:  # the boundary predicts the label (fitted on the detected crops only)
        proj = codes[detected].double().numpy() @ dirs[name].vector.double().numpy()
        corr = np.corrcoef(proj, labels.scores[name][detected])[0, 1]
        assert corr > 0.95, name
        assert report["landmark_labels"][name]["train_correlation"] == pytest.approx(corr, abs=1e-4)
    assert report["landmark_labels"]["used"] == 70
    w = export._latent_samples(G, 400, 0)  # the same codes fit_directions drew
    for name in named:
        v = dirs[name].vector
        sigma = float((w.double() @ (v.double() / v.double().norm())).std())
        assert float(v.norm()) == pytest.approx(sigma, rel=1e-4), name  # strength 1 = one std of W
        assert report["sigma"][name] == pytest.approx(sigma, rel=1e-4)
        assert "standard deviation" in dirs[name].source
    with pytest.raises(ValueError, match="together"):
        export.fit_directions(G, C, n=64, encoder=E)


def test_direction_effects_identity_and_labels():
    pytest.importorskip("dlib")
    G, _, C = _nets()
    v = torch.randn(16, generator=torch.Generator().manual_seed(3))
    dirs = DirectionSet([Direction("smile", v, source="t", kind="interfacegan"),
                         Direction("age", -v, source="t", kind="interfacegan")])
    tiny = export.direction_effects(G, C, dirs, n=3, identity_n=3, strength=1e-5)
    big = export.direction_effects(G, C, dirs, n=3, identity_n=3, strength=8.0)
    for res in (tiny, big):
        assert {"identity_similarity", "identity_same_person_fraction", "smile_label_per_unit"} <= set(res["smile"])
        assert "smile_label_per_unit" not in res["age"] and np.isfinite(res["smile"]["smile_label_per_unit"])
        assert res["_baseline"]["identity_samples"] == 3
    assert tiny["smile"]["identity_similarity"] > 0.99  # (almost) no edit: the same face
    assert big["smile"]["identity_similarity"] < tiny["smile"]["identity_similarity"] - 0.01
    assert big["smile"]["smile_label_per_unit"] != 0.0
    none = export.direction_effects(G, C, dirs, n=3, identity_n=0)
    assert "identity_similarity" not in none["smile"] and "age_years_per_unit" in none["smile"]


@pytest.fixture
def run_and_aux(tmp_path):
    G, E, C = _nets()
    run, aux = tmp_path / "run", tmp_path / "aux"
    run.mkdir()
    torch.save({"arch": json.dumps(CFG.arch_dict()), "G_ema": G.state_dict(), "E": E.state_dict(),
                "images_seen": 1234, "step": 7}, run / "ckpt.pt")
    save_pretrained(C, aux / "classifier")
    save_pretrained(TinyPerceptual(PerceptualConfig((8, 8, 8))), aux / "perceptual")
    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / f"{20 + i}_{i % 2}_0_2017{i:04d}.jpg.chip.jpg")
    return run, aux, data


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def test_landmark_directions_from_generated_samples_move_the_label(monkeypatch):
    """With landmark_samples, the boundaries are fitted on generated images and their mapping W: a
    label the generator controls (here: mean brightness of the sample, a stand-in for dlib's score)
    must then rise along the fitted direction, and undetected samples are left out."""
    G, _, C = _nets()
    seen = {}

    def fake_label_images(images, **kw):
        x = images.astype(np.float64).mean(axis=(1, 2, 3))
        detected = np.ones(len(images), bool)
        detected[::5] = False
        seen["n"] = len(images)
        scores = {k: x.copy() * (1 if i == 0 else -1) for i, k in enumerate(LANDMARK_ATTRIBUTES)}
        for v in scores.values():
            v[~detected] = 1e6  # garbage that would dominate the fit if used
        return LandmarkLabels(scores, np.zeros((len(images), 68, 2), np.float32), detected, 256)

    monkeypatch.setattr(landmark_labels, "label_images", fake_label_images)
    dirs, report = export.fit_directions(G, C, n=300, seed=0, batch=150, landmark_samples=300)
    assert seen["n"] == 300 and report["landmark_labels"]["used"] == 240
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        w = G.mapping(z)
        base = G(w, noise_mode="const").mean()
        for i, name in enumerate(LANDMARK_ATTRIBUTES):
            moved = G(w + 2 * dirs[name].vector, noise_mode="const").mean()
            assert (moved - base) * (1 if i == 0 else -1) > 0, name
            assert report["landmark_labels"][name]["train_correlation"] > 0.5


def test_export_is_atomic_and_fits_landmark_directions(run_and_aux, tmp_path, monkeypatch):
    run, aux, data = run_and_aux
    out = tmp_path / "models" / "tiny"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from the previous export")
    (out / "template.json").write_text('{"name": "kept"}')
    (out / "MODEL_CARD.md").write_text("kept card")

    def fake_label_images(images, **kw):  # dlib finds nothing in noise: labels from the pixels instead
        x = images.reshape(len(images), -1).astype(np.float64)
        scores = {k: x[:, i::7].mean(1) for i, k in enumerate(LANDMARK_ATTRIBUTES)}
        return LandmarkLabels(scores, np.zeros((len(images), 68, 2), np.float32), np.ones(len(images), bool), 256)

    monkeypatch.setattr(landmark_labels, "label_images", fake_label_images)
    kw = dict(data=data, labels=tmp_path / "labels.npz", n=200, effects_n=4, identity_n=0)
    report = export.export_model(run, aux, out, name="tiny", config={}, **kw)
    names = DirectionSet.load(out / "directions").names()
    assert set(LANDMARK_ATTRIBUTES) | {"age", "gender"} <= set(names)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["name"] == "tiny" and manifest["template"] == "template.json"
    assert manifest["training"]["steps"] == 7
    assert json.loads((out / "directions_report.json").read_text())["unit"] == export.DIRECTION_UNIT
    assert (out / "template.json").read_text() == '{"name": "kept"}' and (out / "MODEL_CARD.md").read_text() == "kept card"
    assert not (out / "stale.txt").exists()  # replaced as a whole
    assert set(report["effects"]) >= {"smile", "_baseline"} and (tmp_path / "labels.npz").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left
    from dhr.models.zoo import load_model

    assert load_model(out).directions["smile"].vector.shape == (16,)

    # A crash half-way leaves the previous model exactly as it was, and no temporary folder.
    before = _listing(out)

    def crash(*a, **k):
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(landmark_labels, "label_images", crash)  # the cache must be used: labelling would crash
    monkeypatch.setattr(export, "direction_effects", crash)
    with pytest.raises(RuntimeError, match="half-way"):
        export.export_model(run, aux, out, name="tiny", config={}, **kw)
    assert _listing(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]
    # Exporting into a new folder works too (nothing to replace).
    monkeypatch.undo()
    export.export_model(run, aux, tmp_path / "models" / "fresh", config={}, n=200, effects_n=4, identity_n=0)
    assert (tmp_path / "models" / "fresh" / "model.json").is_file()
    assert "card" not in json.loads((tmp_path / "models" / "fresh" / "model.json").read_text())  # none was given
    load_model(tmp_path / "models" / "fresh")  # loads: the manifest names no missing card
    assert "smile" not in DirectionSet.load(tmp_path / "models" / "fresh" / "directions").names()
