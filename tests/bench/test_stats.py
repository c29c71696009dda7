"""The paired bootstrap behind every benchmark verdict: known significant and not significant cases."""

from __future__ import annotations

import numpy as np
import pytest

from dhr.bench.report import verdicts
from dhr.bench.stats import bootstrap_mean, paired_bootstrap
from dhr.errors import ConfigError


def test_consistent_shift_is_significant_and_counts_wins():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.1, 0.3, 30)
    a = b - 0.02 + rng.normal(0, 0.002, 30)  # A lower on every image by about 0.02
    c = paired_bootstrap(a, b, direction="lower")
    assert c.significant and c.a_better is True
    assert c.ci_high < 0 and c.ci_low < c.diff < c.ci_high
    assert (c.wins_a, c.wins_b, c.ties, c.n) == (30, 0, 0, 30)
    assert c.ratio < 1 and c.ratio_low <= c.ratio <= c.ratio_high < 1
    # The same shift the other way round: significant, A worse.
    w = paired_bootstrap(b, a, direction="lower")
    assert w.significant and w.a_better is False and (w.wins_a, w.wins_b) == (0, 30)


def test_pairing_matters_large_spread_small_paired_difference():
    # Image difficulty varies hugely (unpaired, the means overlap), but A is better on each image by 1%.
    b = np.linspace(0.01, 1.0, 40)
    a = b * 0.99
    c = paired_bootstrap(a, b, direction="lower")
    assert c.significant and c.a_better and c.wins_a == 40


def test_zero_mean_noise_is_not_significant():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.1, 0.3, 25)
    d = rng.normal(0, 0.05, 25)
    a = b + (d - d.mean())  # differences with exactly zero mean
    c = paired_bootstrap(a, b, direction="lower")
    assert not c.significant and c.a_better is None
    assert c.ci_low < 0 < c.ci_high
    assert c.wins_a + c.wins_b + c.ties == 25


def test_identical_values_tie():
    a = [0.5, 0.2, 0.9]
    c = paired_bootstrap(a, a, direction="higher")
    assert c.diff == 0 and c.ci_low == c.ci_high == 0 and not c.significant and c.ties == 3


def test_abs_higher_compares_magnitudes():
    # Attribute change per unit: A moves the attribute by -1 per unit, B by +0.2: A is more editable.
    rng = np.random.default_rng(3)
    a = -1.0 + rng.normal(0, 0.1, 20)
    b = 0.2 + rng.normal(0, 0.1, 20)
    c = paired_bootstrap(a, b, direction="abs_higher")
    assert c.significant and c.a_better and c.mean_a == pytest.approx(abs(a.mean()))
    assert c.wins_a == 20


def test_seeded_and_deterministic():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 15), rng.normal(0.3, 1, 15)
    c1 = paired_bootstrap(a, b, seed=7)
    c2 = paired_bootstrap(a, b, seed=7)
    c3 = paired_bootstrap(a, b, seed=8)
    assert c1 == c2
    assert (c1.ci_low, c1.ci_high) != (c3.ci_low, c3.ci_high)
    m, lo, hi = bootstrap_mean(a, seed=7)
    assert lo < m < hi and bootstrap_mean(a, seed=7) == (m, lo, hi)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ConfigError, match="same images"):
        paired_bootstrap([1, 2], [1, 2, 3])
    with pytest.raises(ConfigError, match="zero images"):
        paired_bootstrap([], [])
    with pytest.raises(ConfigError, match="finite"):
        paired_bootstrap([1, float("nan")], [1, 2])
    with pytest.raises(ConfigError, match="direction"):
        paired_bootstrap([1], [2], direction="up")


def _records(dhr: list[float], pti: list[float]) -> list[dict]:
    return [{"image": f"i{k}", "methods": {"dhr": {"metrics": {"mse": x}}, "pti": {"metrics": {"mse": y}}}}
            for k, (x, y) in enumerate(zip(dhr, pti))]


def test_verdict_words_follow_the_interval():
    rng = np.random.default_rng(5)
    pti = rng.uniform(0.02, 0.05, 20)
    sig = verdicts(_records(list(pti * 0.8), list(pti)), ["dhr", "pti"])[0]
    assert sig["significant"] and sig["ci_high"] < 0 and sig["wins"] == 20 and sig["other_wins"] == 0
    assert "dhr beats pti on MSE" in sig["text"] and "95% CI" in sig["text"] and sig["short"].startswith("yes")
    assert sig["ratio"] == pytest.approx(0.8) and sig["ratio_high"] < 1
    d = rng.normal(0, 0.01, 20)
    ns = verdicts(_records(list(pti + d - d.mean()), list(pti)), ["dhr", "pti"])[0]
    assert not ns["significant"] and ns["short"].startswith("n.s.")
    assert "no significant difference" in ns["text"] and "not significant" in ns["text"]
    worse = verdicts(_records(list(pti * 1.5), list(pti)), ["dhr", "pti"])[0]
    assert worse["significant"] and "dhr is worse than pti" in worse["text"] and worse["short"].startswith("no")


def test_verdicts_pair_only_images_both_scored():
    recs = _records([0.1, 0.1, 0.1], [0.2, 0.2, 0.2])
    recs.append({"image": "only_pti", "methods": {"pti": {"metrics": {"mse": 100.0}}}})
    v = verdicts(recs, ["dhr", "pti"])[0]
    assert v["pairs"] == 3 and v["other_mean"] == pytest.approx(0.2)
