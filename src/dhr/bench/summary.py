"""Statistics over a benchmark's per-image results: summaries, paired verdicts, editability.

Reads only the plain data of ``results.json`` (``images``: per image, per method, ``metrics``,
``edits``, ``time_s``, ``peak_mem_mb``), so old reports can be summarised again. Metric keys are
``<region.>leaf`` (``ood.lpips``) and ``edit.<direction>.<leaf>``; :func:`metric_direction` says
which way is better, :func:`metric_label` how the report names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dhr.bench.stats import N_BOOT, bootstrap_mean, paired_bootstrap

__all__ = [
    "DETECTION_MEASURES",
    "EDIT_MEASURES",
    "editability_table",
    "flatten_entry",
    "format_value",
    "metric_direction",
    "metric_label",
    "occluder_detection",
    "summarize",
    "verdicts",
]

_LOWER = {"mse", "lpips", "time_s", "peak_mem_mb", "ood_lpips", "ood_mse", "occ_lpips", "occ_mse", "ood_false_alarm"}
_HIGHER = {"psnr", "psnr_ref", "ssim", "id", "iou_ood", "id_kept"}
_ABS_HIGHER = {"attr_per_unit"}

_NAMES = {
    "mse": "MSE", "psnr": "PSNR (dB)", "psnr_ref": "PSNR 2/MSE (dB)", "ssim": "SSIM", "lpips": "LPIPS",
    "id": "ID sim", "time_s": "time (s)", "peak_mem_mb": "peak mem (MB)", "iou_ood": "OOD IoU",
    "attr_per_unit": "attr/unit", "id_kept": "ID kept", "ood_lpips": "OOD LPIPS", "ood_mse": "OOD MSE",
    "occ_lpips": "occluder LPIPS", "occ_mse": "occluder MSE", "ood_false_alarm": "OOD false alarms",
    "delta_norm": "|θ*-θ|",
}
_REGION = {"in.": "in-domain ", "ood.": "out-of-domain ", "occ_in.": "inside occluder ", "occ_out.": "outside occluder "}


def metric_direction(key: str) -> str | None:
    """``lower``, ``higher``, ``abs_higher`` (larger magnitude is better) or None for a metric key."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf in _LOWER:
        return "lower"
    if leaf in _HIGHER:
        return "higher"
    if leaf in _ABS_HIGHER:
        return "abs_higher"
    return None


def metric_label(key: str) -> str:
    """Readable name of a metric key (``ood.lpips`` -> ``out-of-domain LPIPS``)."""
    if key.startswith("edit."):
        _, name, leaf = key.split(".", 2)
        return f"{name} edit: {_NAMES.get(leaf, leaf)}"
    for p, text in _REGION.items():
        if key.startswith(p):
            return text + _NAMES.get(key[len(p):], key[len(p):])
    return _NAMES.get(key, key)


def flatten_entry(entry: dict) -> dict[str, float]:
    """One method's record for one image -> ``{metric: value}`` (finite numbers only)."""
    flat: dict[str, Any] = {}
    flat.update(entry.get("metrics", {}))
    flat.update(entry.get("edits", {}))
    for k in ("time_s", "peak_mem_mb"):
        if k in entry:
            flat[k] = entry[k]
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _per_image(results: Sequence[dict], labels: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {metric: {image: value}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in labels}
    for rec in results:
        for m, entry in rec.get("methods", {}).items():
            if m not in out or "metrics" not in entry:
                continue
            for k, v in flatten_entry(entry).items():
                out[m].setdefault(k, {})[rec["image"]] = v
    return out


def summarize(results: Sequence[dict], labels: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, standard deviation, median and count of every metric per method.

    Returns:
        ``{method: {metric: {"mean", "std", "median", "n"}}}`` over the images where the metric exists.
    """
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for m, metrics in _per_image(results, labels).items():
        summary[m] = {}
        for k, values in sorted(metrics.items()):
            a = np.asarray(list(values.values()), dtype=np.float64)
            summary[m][k] = {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)),
                             "n": int(a.size)}
    return summary


def format_value(v: float | None, key: str = "") -> str:
    """A metric value as the report prints it (``n/a`` for None and non-finite; digits by metric)."""
    if v is None or not math.isfinite(v):
        return "n/a"
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ("psnr", "psnr_ref", "time_s", "peak_mem_mb"):
        return f"{v:.2f}" if leaf != "peak_mem_mb" else f"{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 0.01 or v == 0:
        return f"{v:.4f}"
    return f"{v:.2e}"


def verdicts(results: Sequence[dict], labels: Sequence[str], reference: str = "dhr", *, seed: int = 0,
             n_boot: int = N_BOOT) -> list[dict]:
    """Does ``reference`` beat each other method, metric by metric? Paired, with a bootstrap interval.

    Only images scored by both methods count (paired). For each metric the record gives both means
    over those images, their difference ``reference - other`` with its seeded 95 % bootstrap
    interval, the ratio of the means with its interval, and the count of images where each side is
    strictly better (:func:`dhr.bench.stats.paired_bootstrap`). The verdict word is ``beats`` or
    ``is worse than`` only when the interval excludes 0, else ``no significant difference``.

    Args:
        results: Per-image records (``results.json``'s ``images``).
        labels: Method labels.
        reference: The method compared with every other.
        seed: Seed of the bootstrap resampling (the benchmark's seed).
        n_boot: Bootstrap resamples.

    Returns:
        A list of ``{"metric", "other", "reference_mean", "other_mean", "better", "significant", "diff",
        "ci_low", "ci_high", "ratio", "ratio_low", "ratio_high", "relative", "wins", "other_wins", "ties",
        "pairs", "short", "text"}``; ``better`` is the direction of the point estimate, ``significant``
        whether the interval excludes 0. Empty when ``reference`` has no results.
    """
    per = _per_image(results, labels)
    if reference not in per or not per[reference]:
        return []
    out = []
    for key in sorted(per[reference]):
        direction = metric_direction(key)
        if direction is None:
            continue
        ref_vals = per[reference][key]
        for other in labels:
            if other == reference or key not in per.get(other, {}):
                continue
            oth_vals = per[other][key]
            pairs = sorted(set(ref_vals) & set(oth_vals))
            if not pairs:
                continue
            c = paired_bootstrap([ref_vals[i] for i in pairs], [oth_vals[i] for i in pairs], direction=direction,
                                 seed=seed, n_boot=n_boot)
            a, b = c.mean_a, c.mean_b
            better = a < b if direction == "lower" else a > b
            rel = (a - b) / abs(b) if b != 0 else math.nan
            how = ""
            if math.isfinite(rel) and a != b:
                size = abs(rel) * 100
                if direction == "lower":
                    how = f"{size:.1f}% {'lower' if a < b else 'higher'}"
                elif direction == "higher":
                    how = f"{size:.1f}% {'higher' if a > b else 'lower'}"
                else:
                    how = f"{size:.1f}% {'larger' if a > b else 'smaller'} magnitude"
                if key.rsplit(".", 1)[-1] in ("psnr", "psnr_ref"):
                    how = f"{a - b:+.2f} dB"
            if c.ties == c.n:
                word = "ties with"
            elif not c.significant:
                word = "shows no significant difference from"
            else:
                word = "beats" if c.a_better else "is worse than"
            ci = f"[{format_value(c.ci_low, key)}, {format_value(c.ci_high, key)}]"
            detail = f"{how}; " if how else ""
            sig = "" if c.significant else ", not significant: the interval spans 0"
            text = (f"{reference} {word} {other} on {metric_label(key)}: {format_value(a, key)} vs {format_value(b, key)} "
                    f"({detail}difference {format_value(c.diff, key)}, 95% CI {ci}{sig}; {reference} better on "
                    f"{c.wins_a}/{c.n} images, {other} on {c.wins_b})")
            verdict = "=" if word == "ties with" else ("n.s." if not c.significant else
                                                       ("yes" if c.a_better else "no"))
            short = f"{verdict} ({how}; {ci}; {c.wins_a}:{c.wins_b})" if how else f"{verdict} ({c.wins_a}:{c.wins_b})"
            out.append({"metric": key, "other": other, "reference_mean": a, "other_mean": b, "better": bool(better),
                        "significant": c.significant, "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "ratio": _finite_or_none(c.ratio), "ratio_low": _finite_or_none(c.ratio_low),
                        "ratio_high": _finite_or_none(c.ratio_high),
                        "relative": rel if math.isfinite(rel) else None, "wins": c.wins_a, "other_wins": c.wins_b,
                        "ties": c.ties, "pairs": c.n, "n_boot": c.n_boot, "seed": c.seed, "short": short,
                        "text": text})
    return out


def _finite_or_none(v: float) -> float | None:
    """``float(v)``, or None when it is not finite."""
    return float(v) if math.isfinite(v) else None


DETECTION_MEASURES = {"iou_ood": "IoU (out-of-domain mask vs occluder)",
                      "ood_false_alarm": "false alarms outside the occluder",
                      "clean_ood_fraction": "out of domain on the clean face"}
"""How well DHR's out-of-domain mask finds the occluders (keys of a record's ``reference_mask``)."""


def occluder_detection(images: Sequence[dict], *, seed: int = 0) -> dict[str, tuple[float, float, float, int]]:
    """Mean and seeded 95 % bootstrap interval of DHR's occluder detection over the images.

    Reads each record's ``reference_mask`` (``iou_ood``, ``ood_false_alarm``, ``clean_ood_fraction``).

    Returns:
        ``{measure: (mean, low, high, n)}`` for the measures present.
    """
    out = {}
    for k in DETECTION_MEASURES:
        vals = [r["reference_mask"][k] for r in images
                if isinstance(r.get("reference_mask"), dict) and r["reference_mask"].get(k) is not None]
        if vals:
            out[k] = (*bootstrap_mean(vals, seed=seed), len(vals))
    return out


EDIT_MEASURES: tuple[tuple[str, str], ...] = (
    ("attr_per_unit", "attribute change per unit\n(|mean|; higher = more editable)"),
    ("id_kept", "identity kept under the edit\n(dlib similarity; higher = same person)"),
    ("ood_lpips", "change outside the face under the edit\n(LPIPS in DHR's out-of-domain mask; lower)"),
    ("occ_lpips", "occluder kept under the edit\n(LPIPS vs the input on the occluder; lower)"),
)
"""The editability measures shown together (``editability_<method>.png``), with their panel titles."""


def editability_table(results: Sequence[dict], labels: Sequence[str], *, seed: int = 0
                      ) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """Every editability measure per method and edit, with seeded 95 % bootstrap intervals.

    Returns:
        ``{method: {"<edit>.<measure>": (mean, low, high, n)}}``; for ``attr_per_unit`` the mean and
        interval are of the signed per-image values (their magnitude is what counts).
    """
    per = _per_image(results, labels)
    out: dict[str, dict[str, tuple[float, float, float, int]]] = {}
    for m in labels:
        out[m] = {}
        for key, vals in sorted(per.get(m, {}).items()):
            if key.startswith("edit.") and key.rsplit(".", 1)[-1] in dict(EDIT_MEASURES):
                v = list(vals.values())
                out[m][key[len("edit."):]] = (*bootstrap_mean(v, seed=seed), len(v))
    return out
