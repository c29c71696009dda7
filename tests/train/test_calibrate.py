"""Threshold calibration on a tiny model with synthetic crops."""

from __future__ import annotations

import json

import pytest

from dhr.train.calibrate import calibrate_thresholds, write_thresholds
from tests.pipeline_fixtures import make_tiny_model, synthetic_photo


def test_calibration_report_and_write(tmp_path):
    from dhr.pipeline import Pipeline

    model = make_tiny_model(tmp_path / "model")
    data = tmp_path / "crops"
    for i in range(4):
        synthetic_photo(data / f"{20 + i}_{i % 2}_0_2017010{i}.jpg.chip.png", size=(40, 40), seed=i)
    scales = (0.01, 0.5, 1.0, 1e6)
    rep = calibrate_thresholds(model, data, n=3, scales=scales, min_regions=(0.0, 0.9), val_fraction=0.0,
                               steps_scale=0.05)
    assert rep["n"] == 3 and rep["scales"] == list(scales) and len(rep["images"]) == 3
    assert rep["coarse_steps"] == 2 and rep["steps_scale"] == 0.05  # the reference 40 coarse steps x 0.05
    for key in ("iou", "false_alarm", "clean_ood_fraction", "occluded_ood_fraction"):
        assert len(rep[key]) == len(scales) and all(0.0 <= v <= 1.0 for v in rep[key])
    # Larger thresholds mark fewer pixels out of domain; a huge one marks none.
    assert rep["occluded_ood_fraction"] == sorted(rep["occluded_ood_fraction"], reverse=True)
    assert rep["occluded_ood_fraction"][-1] == 0.0 and rep["clean_ood_fraction"][-1] == 0.0
    # A clean-up of 90 % puts every smaller out-of-domain region back in domain (one region can be larger).
    assert [g["min_region"] for g in rep["grid"]] == [0.0] * len(scales) + [0.9] * len(scales)
    for row in rep["images"]:
        for k in range(len(scales)):
            before, after = row["occluded_ood_fraction"][k], row["occluded_ood_fraction"][len(scales) + k]
            assert after == (0.0 if before < 0.9 else before)
    # The rule: the best IoU among settings with <= 2 % false alarms on both counts.
    ok = [g for g in rep["grid"] if g["false_alarm"] <= 0.02 and g["clean_ood_fraction"] <= 0.02]
    assert ok and rep["best"]["iou"] == max(g["iou"] for g in ok)
    assert rep["best"]["false_alarm"] <= 0.02 and rep["best"]["clean_ood_fraction"] <= 0.02
    assert set(rep["by_fill"]) <= {"noise", "stripes", "checker", "object"}
    s = rep["best_scale"]
    assert rep["thresholds"] == {"theta_skin": round(0.7 * s, 4), "theta_inner": round(0.8 * s, 4),
                                 "theta_other": round(0.6 * s, 4)}
    write_thresholds(model, {"theta_skin": 0.1, "theta_inner": 0.2, "theta_other": 0.3},
                     calibration={"coarse_steps": 40, "n": 3})
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["config"]["segment"] == {"theta_skin": 0.1, "theta_inner": 0.2, "theta_other": 0.3}
    assert manifest["training"]["calibration"] == {"coarse_steps": 40, "n": 3}
    seg = Pipeline.from_pretrained(model, device="cpu").config.segment
    assert (seg.theta_skin, seg.theta_inner, seg.theta_other) == (0.1, 0.2, 0.3)


def test_calibration_needs_training_crops(tmp_path):
    from dhr.errors import ConfigError

    model = make_tiny_model(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no training crops"):
        calibrate_thresholds(model, tmp_path / "empty", n=2)
