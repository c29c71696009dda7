"""Tests of dhr.train.landmark_labels on constructed landmark arrays."""

from __future__ import annotations

import numpy as np
import pytest

from dhr.errors import ShapeError
from dhr.train.landmark_labels import LANDMARK_ATTRIBUTES, landmark_scores
from tests.faces.conftest import make_landmarks


def _rotate(lm: np.ndarray, deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    return lm @ r.T + np.asarray(shift)


def test_neutral_face_values():
    s = landmark_scores(make_landmarks(256))
    assert set(s) == set(LANDMARK_ATTRIBUTES)
    assert s["yaw"] == pytest.approx(0.0, abs=1e-9)  # nose tip exactly between the eyes
    assert 0.15 < s["eyes_open"] < 0.5
    assert 0.5 < s["smile"] < 1.5


def test_wider_mouth_and_raised_corners_smile_more():
    lm = make_landmarks(256)
    wide = lm.copy()
    wide[48, 0] -= 8
    wide[54, 0] += 8
    lifted = lm.copy()
    lifted[[48, 54], 1] -= 6
    base = landmark_scores(lm)["smile"]
    assert landmark_scores(wide)["smile"] > base + 0.2  # 16 px wider over an iod of 64 px: +0.25
    assert landmark_scores(lifted)["smile"] == pytest.approx(base + 6 / 64, abs=1e-9)
    drooping = lm.copy()
    drooping[[48, 54], 1] += 6
    assert landmark_scores(drooping)["smile"] < base


def test_closed_eyes_have_a_low_aspect_ratio():
    lm = make_landmarks(256)
    closed = lm.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        closed[upper, 1] = closed[lower, 1] - 0.5
    assert landmark_scores(closed)["eyes_open"] < 0.1 < landmark_scores(lm)["eyes_open"]
    one = lm.copy()
    one[[37, 38], 1] = one[[41, 40], 1]
    assert landmark_scores(closed)["eyes_open"] < landmark_scores(one)["eyes_open"] < landmark_scores(lm)["eyes_open"]


def test_nose_shift_gives_signed_yaw():
    lm = make_landmarks(256)
    right, left = lm.copy(), lm.copy()
    right[30, 0] += 16
    left[30, 0] -= 8
    assert landmark_scores(right)["yaw"] == pytest.approx(16 / 64)
    assert landmark_scores(left)["yaw"] == pytest.approx(-8 / 64)


def test_scores_ignore_scale_shift_and_roll_and_batch():
    lm = make_landmarks(256)
    lm[30, 0] += 5
    lm[[48, 54], 1] -= 3
    moved = _rotate(lm, 17.0, 0.4, (30.0, -12.0))
    a, b = landmark_scores(lm), landmark_scores(moved)
    for k in LANDMARK_ATTRIBUTES:
        assert b[k] == pytest.approx(a[k], abs=1e-9)
    batch = landmark_scores(np.stack([lm, moved]))
    assert all(v.shape == (2,) for v in batch.values())
    np.testing.assert_allclose(batch["yaw"], [a["yaw"], a["yaw"]])


def test_bad_shapes():
    with pytest.raises(ShapeError, match="68, 2"):
        landmark_scores(np.zeros((5, 2)))
    with pytest.raises(ShapeError, match="inter-ocular"):
        landmark_scores(np.zeros((68, 2)))


def test_training_labels_cache(tmp_path, monkeypatch):
    from PIL import Image

    import dhr.train.landmark_labels as ll
    from dhr.train.data import is_validation

    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / f"{20 + i}_0_0_{i:04d}.jpg.chip.jpg")
    calls = []

    def fake(images, size=256, **kw):
        calls.append(images.shape)
        n = len(images)
        scores = {k: images.reshape(n, -1).mean(1) + j for j, k in enumerate(LANDMARK_ATTRIBUTES)}
        return ll.LandmarkLabels(scores, np.zeros((n, 68, 2), np.float32), np.ones(n, bool), size)

    monkeypatch.setattr(ll, "label_images", fake)
    cache = tmp_path / "labels.npz"
    images, labels = ll.training_labels(data, 32, cache, val_fraction=0.2)
    n_train = sum(not is_validation(p.name, 0.2) for p in data.iterdir())
    assert 0 < n_train < 30 and images.shape == (n_train, 32, 32, 3) and calls == [(n_train, 32, 32, 3)]
    again_images, again = ll.training_labels(data, 32, cache, val_fraction=0.2)
    assert len(calls) == 1  # from the cache
    np.testing.assert_array_equal(again.scores["smile"], labels.scores["smile"])
    np.testing.assert_array_equal(again_images, images)
    ll.training_labels(data, 16, cache, val_fraction=0.2)  # other crops: relabelled
    ll.training_labels(data, 16, cache, val_fraction=0.1)  # another split: relabelled
    assert [c[1] for c in calls] == [32, 16, 16]
