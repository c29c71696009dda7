"""Paired comparisons with a seeded bootstrap: what a benchmark verdict rests on.

Two methods scored on the same images give paired values ``a[i]``, ``b[i]``. :func:`paired_bootstrap`
resamples the *images* (the same resampled indices for both methods, so the pairing is kept) and
reports the 95 % percentile interval of

- the difference of the statistics, ``f(mean(a*)) - f(mean(b*))``, where ``f`` is the identity, or
  the absolute value for metrics where a larger magnitude is better (an attribute change per unit
  may be negative); with ``f`` the identity this is the mean of the per-image differences;
- their ratio ``f(mean(a*)) / f(mean(b*))`` (for targets such as "MSE <= 0.7 x PTI's").

A difference is *significant* when its interval excludes 0. The resampling uses
``numpy.random.default_rng(seed)``, so the same values and seed give the same interval on every
machine and run. The per-image win counts (``a`` better, ``b`` better, ties) are reported beside the
interval: they say how general a difference is, the interval says whether the mean difference could
be noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dhr.checks import check_choice
from dhr.errors import ConfigError

__all__ = ["DIRECTIONS", "PairedComparison", "bootstrap_mean", "paired_bootstrap"]

DIRECTIONS: tuple[str, ...] = ("lower", "higher", "abs_higher")
"""Which way is better: ``lower``, ``higher``, or ``abs_higher`` (a larger magnitude)."""

N_BOOT = 10_000
"""Bootstrap resamples of every interval."""


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison of method A with method B on the same images.

    Attributes:
        n: Number of paired images.
        mean_a: ``f(mean(a))`` (``f`` = abs for ``abs_higher``, else the identity).
        mean_b: ``f(mean(b))``.
        diff: ``mean_a - mean_b``.
        ci_low: Lower end of the 95 % bootstrap interval of ``diff``.
        ci_high: Upper end.
        ratio: ``mean_a / mean_b`` (NaN when ``mean_b`` is 0).
        ratio_low: Lower end of the 95 % bootstrap interval of the ratio (NaN when undefined).
        ratio_high: Upper end.
        wins_a: Images where A is strictly better (in ``direction``).
        wins_b: Images where B is strictly better.
        ties: Images where they are equal.
        significant: The interval of ``diff`` excludes 0.
        a_better: A is better and the difference is significant (None when not significant).
        direction: ``lower``, ``higher`` or ``abs_higher``.
        level: Confidence level (0.95).
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling.
    """

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    ratio: float
    ratio_low: float
    ratio_high: float
    wins_a: int
    wins_b: int
    ties: int
    significant: bool
    a_better: bool | None
    direction: str
    level: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _as_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ConfigError(f"paired values need the same images: got {x.size} and {y.size} values")
    if x.size == 0:
        raise ConfigError("paired comparison of zero images: score at least one image with both methods")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("paired values must be finite; drop the images where a method has no score")
    return x, y


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, direction: str = "lower", n_boot: int = N_BOOT,
                     seed: int = 0, level: float = 0.95) -> PairedComparison:
    """Paired bootstrap comparison of two methods' per-image values.

    Args:
        a: ``(N,)`` values of method A, image i at index i.
        b: ``(N,)`` values of method B on the same images, in the same order.
        direction: ``lower``, ``higher`` or ``abs_higher`` (see :data:`DIRECTIONS`).
        n_boot: Number of resamples of the images.
        seed: Seed of the resampling (deterministic).
        level: Confidence level of the percentile interval, in (0, 1).

    Returns:
        A :class:`PairedComparison`.

    Raises:
        ConfigError: Different lengths, no images, non-finite values, a bad direction, level or n_boot.
    """
    check_choice(direction, DIRECTIONS, "direction")
    if not 0 < level < 1:
        raise ConfigError(f"level={level} must be in (0, 1), e.g. 0.95")
    if n_boot < 100:
        raise ConfigError(f"n_boot={n_boot} is too few resamples for a percentile interval; use >= 1000")
    x, y = _as_pairs(a, b)
    f = np.abs if direction == "abs_higher" else (lambda v: v)
    idx = _indices(x.size, n_boot, seed)
    sa, sb = f(x[idx].mean(axis=1)), f(y[idx].mean(axis=1))
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    lo, hi = np.percentile(sa - sb, q)
    ma, mb = float(f(x.mean())), float(f(y.mean()))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = sa / sb
    if mb != 0 and np.isfinite(ratios).all():
        rlo, rhi = (float(v) for v in np.percentile(ratios, q))
    else:
        rlo = rhi = math.nan
    if direction == "lower":
        wa, wb = int((x < y).sum()), int((x > y).sum())
    elif direction == "higher":
        wa, wb = int((x > y).sum()), int((x < y).sum())
    else:
        wa, wb = int((np.abs(x) > np.abs(y)).sum()), int((np.abs(x) < np.abs(y)).sum())
    significant = bool(lo > 0 or hi < 0)
    better = None
    if significant:
        better = bool(hi < 0) if direction == "lower" else bool(lo > 0)
    return PairedComparison(
        n=int(x.size), mean_a=ma, mean_b=mb, diff=ma - mb, ci_low=float(lo), ci_high=float(hi),
        ratio=ma / mb if mb != 0 else math.nan, ratio_low=rlo, ratio_high=rhi, wins_a=wa, wins_b=wb,
        ties=int(x.size) - wa - wb, significant=significant, a_better=better, direction=direction, level=level,
        n_boot=int(n_boot), seed=int(seed))


def bootstrap_mean(values: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
                   ) -> tuple[float, float, float]:
    """Mean of ``values`` with its seeded 95 % percentile bootstrap interval: ``(mean, low, high)``.

    Raises:
        ConfigError: No values or non-finite values.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise ConfigError("bootstrap_mean needs at least one value, all finite")
    if not 0 < level < 1:
        raise ConfigError(f"level={level} must be in (0, 1), e.g. 0.95")
    means = x[_indices(x.size, n_boot, seed)].mean(axis=1)
    lo, hi = np.percentile(means, ((1 - level) / 2 * 100, (1 + level) / 2 * 100))
    return float(x.mean()), float(lo), float(hi)
