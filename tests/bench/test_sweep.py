"""The settings sweep's selection rule and its training-only sample."""

from __future__ import annotations

import pytest

from dhr.bench.sweep import pareto_front, pick, training_sample
from dhr.errors import ConfigError
from dhr.train.data import is_validation

PTI = {"mse": 0.04, "id_kept": 0.88}


def row(name, mse, edit, idk=0.88):
    return {"name": name, "mse": mse, "editability": edit, "id_kept": idk}


def test_pareto_front_drops_dominated_settings():
    rows = [row("a", 0.01, 0.5), row("b", 0.02, 0.9), row("c", 0.03, 0.8), row("d", 0.03, 1.1)]
    assert pareto_front(rows) == ["a", "b", "d"]  # c: d is as faithful and more editable


def test_pick_prefers_editable_enough_then_lowest_mse():
    rows = [row("faithful", 0.01, 0.5), row("both", 0.02, 0.95), row("editable", 0.03, 1.2)]
    assert pick(rows, PTI)[0] == "both"


def test_pick_falls_back_to_most_editable_within_the_fidelity_target():
    rows = [row("faithful", 0.01, 0.4), row("mid", 0.025, 0.7), row("loose", 0.035, 0.85)]
    name, why = pick(rows, PTI)
    assert name == "mid" and "0.7 x PTI's" in why  # loose is above 0.7 x 0.04 = 0.028


def test_pick_ignores_settings_that_lose_identity():
    rows = [row("lost", 0.01, 1.5, idk=0.80), row("kept", 0.02, 0.95)]
    assert pick(rows, PTI)[0] == "kept"
    with pytest.raises(ConfigError):
        pick([], PTI)


def test_training_sample_never_takes_held_out_crops(tmp_path):
    for i in range(400):
        (tmp_path / f"{i % 90}_0_0_{i:05d}.jpg").write_bytes(b"")
    picked = training_sample(tmp_path, 12, skip=60)
    assert len(picked) == 12 and len(set(picked)) == 12
    assert not any(is_validation(p.name, 0.04) for p in picked)
    first = sorted(p.name for p in tmp_path.iterdir() if not is_validation(p.name, 0.04))[:60]
    assert not set(first) & {p.name for p in picked}
    with pytest.raises(ConfigError, match="training crops"):
        training_sample(tmp_path, 1000)
