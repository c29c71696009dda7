"""Benchmark reports: summary statistics, plain-language verdicts, JSON, Markdown and plots.

Files written by :func:`write_report` into the output folder:

- ``results.json``: everything (per-image metrics, failures, summary, verdicts, protocol);
- ``report.md``: protocol, tables (reconstruction, regions, editing), verdicts, failures;
- ``metrics_by_method.png``: mean ± std of the main metrics per method;
- ``fidelity_vs_editability.png``: LPIPS against the edit's attribute change and against the
  out-of-domain change under edits, one point per method;
- ``qualitative_<k>.png``: per method a row input / mask / inversion / two edits.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dhr.bench.stats import N_BOOT, bootstrap_mean, paired_bootstrap

__all__ = [
    "flatten_entry",
    "markdown",
    "metric_direction",
    "plot_fidelity_editability",
    "plot_metrics",
    "plot_qualitative",
    "summarize",
    "verdicts",
    "write_report",
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


def _fmt(v: float | None, key: str = "") -> str:
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
            ci = f"[{_fmt(c.ci_low, key)}, {_fmt(c.ci_high, key)}]"
            detail = f"{how}; " if how else ""
            sig = "" if c.significant else ", not significant: the interval spans 0"
            text = (f"{reference} {word} {other} on {metric_label(key)}: {_fmt(a, key)} vs {_fmt(b, key)} "
                    f"({detail}difference {_fmt(c.diff, key)}, 95% CI {ci}{sig}; {reference} better on "
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
    return float(v) if math.isfinite(v) else None


_DETECTION = {"iou_ood": "IoU (out-of-domain mask vs occluder)",
              "ood_false_alarm": "false alarms outside the occluder",
              "clean_ood_fraction": "out of domain on the clean face"}


def occluder_detection(images: Sequence[dict], *, seed: int = 0) -> dict[str, tuple[float, float, float, int]]:
    """Mean and seeded 95 % bootstrap interval of DHR's occluder detection over the images.

    Reads each record's ``reference_mask`` (``iou_ood``, ``ood_false_alarm``, ``clean_ood_fraction``).

    Returns:
        ``{measure: (mean, low, high, n)}`` for the measures present.
    """
    out = {}
    for k in _DETECTION:
        vals = [r["reference_mask"][k] for r in images
                if isinstance(r.get("reference_mask"), dict) and r["reference_mask"].get(k) is not None]
        if vals:
            out[k] = (*bootstrap_mean(vals, seed=seed), len(vals))
    return out


def _table(summary: dict, labels: Sequence[str], keys: Sequence[str]) -> list[str]:
    keys = [k for k in keys if any(k in summary.get(m, {}) for m in labels)]
    if not keys:
        return []
    lines = ["| method | " + " | ".join(metric_label(k) for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for m in labels:
        cells = []
        for k in keys:
            s = summary.get(m, {}).get(k)
            cells.append("n/a" if s is None else f"{_fmt(s['mean'], k)} ± {_fmt(s['std'], k)}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    """The Markdown report of a results dict (see :func:`dhr.bench.run.run_benchmark`)."""
    b, p = result["benchmark"], result["protocol"]
    labels = b["methods"]
    summary = result["summary"]
    n_ok = sum(1 for r in result["images"] if r.get("methods"))
    lines = [f"# Benchmark: {b['model']} on {b['data']}", ""]
    if b.get("command"):
        lines += ["Command:", "", "```", b["command"], "```", ""]
    lines += [
        f"- images: {n_ok} scored of {b['n_images']} listed"
        + (" (with seeded synthetic occluders)" if b["occlusion"] else ""),
        f"- model resolution {b['model_resolution']} px, evaluated at {p['eval_resolution']} px; {p['quantisation']}",
        f"- LPIPS: {p['lpips']}; identity: {p['identity']} ({p['identity_landmarks']})",
        f"- PSNR: {p['psnr']}; SSIM: {p['ssim']}",
        f"- fairness: {p['embedding']}; {p['step_budget']}; seed {b['seed']}; losses use {p['loss_perceptual']}",
        f"- regions: {p['regions']}",
        f"- calibration: {p.get('calibration', 'n/a')}",
        f"- DHR parsing: {p.get('parsing', 'n/a')}",
        f"- time: {p['time']}; memory: {p['memory']}",
        "- edits: " + (", ".join(f"{e['direction']} {e['strength']:+g}" for e in b["edits"]) or "none"),
        "",
        "Values are mean ± standard deviation over the images.", "",
        "## Reconstruction", "",
    ]
    lines += _table(summary, labels, ["mse", "psnr", "psnr_ref", "ssim", "lpips", "id", "delta_norm", "time_s",
                                      "peak_mem_mb"])
    region_keys = [f"{r}{k}" for r in ("in.", "ood.") for k in ("mse", "psnr", "ssim", "lpips")]
    lines += ["", "## Regions (DHR mask of each image)", ""] + _table(summary, labels, region_keys)
    if b["occlusion"]:
        occ_keys = ["iou_ood", "ood_false_alarm"] + [f"{r}{k}" for r in ("occ_in.", "occ_out.") for k in ("mse", "psnr", "lpips")]
        lines += ["", "## Occlusion (ground-truth occluder masks)", ""] + _table(summary, labels, occ_keys)
        det = occluder_detection(result["images"], seed=b["seed"])
        if det:
            lines += ["", "Occluder detection by DHR's out-of-domain mask (mean and 95% bootstrap interval over "
                      "the images): IoU with the occluder; false alarms = fraction of the pixels outside the "
                      "occluder marked out of domain; clean = fraction of the same face *without* its occluder "
                      "marked out of domain (its own coarse inversion and segmentation).", "",
                      "| measure | mean | 95% CI | n |", "|---|---|---|---|"]
            for k, (m, lo, hi, n) in det.items():
                lines.append(f"| {_DETECTION[k]} | {m:.3f} | [{lo:.3f}, {hi:.3f}] | {n} |")
            fills: dict[str, list[float]] = {}
            for r in result["images"]:
                iou = (r.get("reference_mask") or {}).get("iou_ood")
                if iou is not None and r.get("occluder"):
                    fills.setdefault(r["occluder"]["fill"], []).append(iou)
            if fills:
                lines += ["", "IoU by occluder fill: " + ", ".join(
                    f"{f} {np.mean(v):.3f} (n={len(v)})" for f, v in sorted(fills.items())) + "."]
    edit_keys = sorted({k for m in labels for k in summary.get(m, {}) if k.startswith("edit.")})
    if edit_keys:
        lines += ["", "## Editing", ""] + _table(summary, labels, edit_keys)
        table = editability_table(result["images"], labels, seed=b["seed"])
        cols = [f"{e}.{leaf}" for e in sorted({k.split(".")[0] for m in table for k in table[m]})
                for leaf, _ in _EDIT_PANELS]
        cols = [c for c in cols if any(c in table[m] for m in labels)]
        if cols:
            lines += ["", "Editability together (mean and 95% bootstrap interval over the images; one plot per "
                      "method: `editability_<method>.png`):", "",
                      "| method | " + " | ".join(metric_label("edit." + c) for c in cols) + " |",
                      "|---|" + "---|" * len(cols)]
            for m in labels:
                cells = []
                for c in cols:
                    v = table[m].get(c)
                    cells.append("n/a" if v is None else
                                 f"{_fmt(v[0], c)} [{_fmt(v[1], c)}, {_fmt(v[2], c)}]")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts (does dhr beat each method?)", ""]
    if result["verdicts"]:
        main = ["mse", "psnr", "ssim", "lpips", "id", "ood.lpips", "iou_ood", "occ_in.lpips"]
        n_boot = result["verdicts"][0].get("n_boot", N_BOOT)
        lines += [f"Paired over the images both methods scored: means, the difference dhr - other with its "
                  f"95% bootstrap interval ({n_boot} resamples of the images, seed {b['seed']}) and the number "
                  f"of images each side wins. \"beats\" / \"is worse than\" only when the interval excludes 0.",
                  "", "Main metrics, in words:", ""]
        for key in main:
            lines += [f"- {v['text']}" for v in result["verdicts"] if v["metric"] == key]
        others = [o for o in labels if o != "dhr" and any(v["other"] == o for v in result["verdicts"])]
        keys = sorted({v["metric"] for v in result["verdicts"]},
                      key=lambda k: (main.index(k) if k in main else len(main), k))
        cell = {(v["metric"], v["other"]): v["short"] for v in result["verdicts"]}
        lines += ["", "Every metric (does dhr beat the column's method? yes / no / n.s. = not significant; "
                  "relative difference; 95% interval of dhr - other; images won dhr:other):", "",
                  "| metric | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
        for k in keys:
            lines.append(f"| {metric_label(k)} | " + " | ".join(cell.get((k, o), "n/a") for o in others) + " |")
    else:
        lines.append("- no verdicts: dhr was not benchmarked or produced no results")
    lines += ["", "## Failures", ""]
    lines += [f"- {f['image']} / {f['method'] or '-'} ({f['stage']}): {f['error']}" for f in result["failures"]] or ["- none"]
    files = result.get("files", {})
    pngs = [v for k, v in files.items() if str(v).endswith(".png")]
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{Path(v).stem}]({Path(v).name})" for v in pngs]
    return "\n".join(lines) + "\n"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_metrics(summary: dict, labels: Sequence[str], path: Path) -> Path:
    """Bar chart (mean ± std) of the main metrics per method."""
    keys = [k for k in ("mse", "psnr", "ssim", "lpips", "id", "time_s") if any(k in summary.get(m, {}) for m in labels)]
    keys = keys or ["time_s"]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    for i, k in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        means = [summary.get(m, {}).get(k, {}).get("mean", np.nan) for m in labels]
        stds = [summary.get(m, {}).get(k, {}).get("std", 0.0) for m in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        d = metric_direction(k)
        ax.set_title(f"{metric_label(k)} ({'lower' if d == 'lower' else 'higher'} is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _edit_mean(summary: dict, m: str, leaf: str) -> float:
    vals = [s["mean"] for k, s in summary.get(m, {}).items() if k.startswith("edit.") and k.endswith("." + leaf)]
    return float(np.mean(vals)) if vals else math.nan


def plot_fidelity_editability(summary: dict, labels: Sequence[str], path: Path) -> Path:
    """LPIPS (fidelity) against |attribute change per unit| of the first scored edit, and against the
    out-of-domain change under edits (mean over the edits), one point per method."""
    attr_keys = sorted({k for m in labels for k in summary.get(m, {}) if k.endswith(".attr_per_unit")})
    attr_key = attr_keys[0] if attr_keys else None
    fig = _figure(10, 4)
    panels = [
        ("attr", f"|{attr_key.split('.')[1]} score change| per unit strength (higher = more editable)"
         if attr_key else "no edit scored by the classifier"),
        ("ood", "out-of-domain LPIPS under edits (lower = better kept)"),
    ]
    for i, (kind, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for m in labels:
            x = summary.get(m, {}).get("lpips", {}).get("mean", math.nan)
            if kind == "attr":
                y = abs(summary.get(m, {}).get(attr_key, {}).get("mean", math.nan)) if attr_key else math.nan
            else:
                y = _edit_mean(summary, m, "ood_lpips")
            if math.isfinite(x) and math.isfinite(y):
                ax.scatter([x], [y], s=40)
                ax.annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("LPIPS of the inversion (lower = more faithful)")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


_EDIT_PANELS = (
    ("attr_per_unit", "attribute change per unit\n(|mean|; higher = more editable)"),
    ("id_kept", "identity kept under the edit\n(dlib similarity; higher = same person)"),
    ("ood_lpips", "change outside the face under the edit\n(LPIPS in DHR's out-of-domain mask; lower)"),
    ("occ_lpips", "occluder kept under the edit\n(LPIPS vs the input on the occluder; lower)"),
)


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
            if key.startswith("edit.") and key.rsplit(".", 1)[-1] in dict(_EDIT_PANELS):
                v = list(vals.values())
                out[m][key[len("edit."):]] = (*bootstrap_mean(v, seed=seed), len(v))
    return out


def plot_editability(table: dict[str, dict[str, tuple[float, float, float, int]]], method: str, path: Path) -> Path:
    """One method's editability together: attribute change per unit, identity kept, change outside the
    face and on the occluder, per edit direction, with 95 % intervals; the other methods' means as grey
    ticks on the same axes for context.

    Args:
        table: :func:`editability_table` output.
        method: The method drawn in colour.
        path: PNG to write.
    """
    edits = sorted({k.split(".")[0] for m in table for k in table[m]})
    fig = _figure(3.3 * len(_EDIT_PANELS), 3.4)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for i, (leaf, title) in enumerate(_EDIT_PANELS):
        ax = fig.add_subplot(1, len(_EDIT_PANELS), i + 1)
        tops = []
        for j, e in enumerate(edits):
            key = f"{e}.{leaf}"
            f = abs if leaf == "attr_per_unit" else (lambda v: v)
            for other, rows in table.items():
                if other != method and key in rows:
                    ax.plot([j - 0.3, j + 0.3], [f(rows[key][0])] * 2, color="0.6", lw=1)
                    ax.annotate(other, (j + 0.32, f(rows[key][0])), fontsize=6, color="0.45", va="center")
                    tops.append(f(rows[key][0]))
            if key in table.get(method, {}):
                mean, lo, hi, n = table[method][key]
                if leaf == "attr_per_unit" and mean < 0:
                    mean, lo, hi = -mean, -hi, -lo
                ax.bar([j], [mean], width=0.5, color=colours[j % len(colours)], alpha=0.85)
                ax.errorbar([j], [mean], yerr=[[mean - lo], [hi - mean]], color="k", capsize=4)
                tops.append(hi)
        ax.set_xticks(range(len(edits)))
        ax.set_xticklabels(edits, fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if tops:
            ax.set_ylim(0, max(tops) * 1.15 if max(tops) > 0 else 1)
    fig.suptitle(f"{method}: editability (bars: mean with 95% bootstrap interval; grey: other methods' means)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _as_uint8(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    import torch

    from dhr.io.image import tensor_to_uint8

    t = x[0] if isinstance(x, torch.Tensor) and x.ndim == 4 else x
    return tensor_to_uint8(t)


def _mask_image(m: Any) -> np.ndarray:
    a = np.asarray(m.detach().cpu().float().numpy() if hasattr(m, "detach") else m, dtype=np.float64)
    a = a.reshape(a.shape[-2], a.shape[-1])
    return np.repeat((a * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def plot_qualitative(sheet: dict, path: Path) -> Path:
    """Rows = methods; columns = input, mask, inversion, edits."""
    rows = sheet["rows"]
    ncols = 3 + max(len(r["edits"]) for r in rows)
    fig = _figure(1.9 * ncols, 1.9 * len(rows) + 0.4)
    for i, row in enumerate(rows):
        panels = [("input", _as_uint8(sheet["input"])),
                  ("mask" if row["mask"] is None else "mask (1 = in)", None if row["mask"] is None else _mask_image(row["mask"])),
                  ("inversion", _as_uint8(row["inversion"]))]
        panels += [(name, _as_uint8(img)) for name, img in row["edits"]]
        for j, (title, img) in enumerate(panels):
            ax = fig.add_subplot(len(rows), ncols, i * ncols + j + 1)
            ax.axis("off")
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.text(-0.08, 0.5, row["method"], transform=ax.transAxes, rotation=90, va="center", ha="right",
                        fontsize=8)
    fig.suptitle(sheet["image"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _file_label(label: str) -> str:
    """``dhr[feature-res=16]`` -> ``dhr_feature-res_16`` (safe in a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_report(result: dict, out: Path, *, sheets: Sequence[dict] = (),
                 extra: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """Writes plots, ``report.md`` and ``results.json`` (in that order) into ``out``.

    Args:
        result: The results dict (gets a ``files`` entry listing what was written).
        out: Output folder (created).
        sheets: Qualitative sheets ``{"image", "input", "rows": [{"method", "mask", "inversion",
            "edits": [(name, image)]}]}``.
        extra: Further files already in ``out`` to list (and show, if PNG) in the report.

    Returns:
        ``{"json", "markdown", "metrics_plot", "tradeoff_plot", "qualitative_<k>"...}`` paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = result["benchmark"]["methods"]
    paths: dict[str, Path] = {"json": out / "results.json", "markdown": out / "report.md"}
    paths["metrics_plot"] = plot_metrics(result["summary"], labels, out / "metrics_by_method.png")
    paths["tradeoff_plot"] = plot_fidelity_editability(result["summary"], labels, out / "fidelity_vs_editability.png")
    table = editability_table(result["images"], labels, seed=result["benchmark"].get("seed", 0))
    for m in labels:
        if table.get(m):
            paths[f"editability_{m}"] = plot_editability(table, m, out / f"editability_{_file_label(m)}.png")
    for k, sheet in enumerate(sheets):
        if sheet.get("rows"):
            paths[f"qualitative_{k}"] = plot_qualitative(sheet, out / f"qualitative_{k}.png")
    paths.update(extra or {})
    result["files"] = {k: str(v) for k, v in paths.items()}
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    paths["json"].write_text(json.dumps(_clean(result), indent=2, default=_json_default), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dhr.bench.report RESULTS_JSON -o FOLDER [--prefix P]``: one editability plot per method.

    Re-draws ``<prefix>editability_<method>.png`` from a benchmark's ``results.json`` (e.g. into
    ``docs/img``) without re-running anything.
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dhr.bench.report", description=main.__doc__)
    ap.add_argument("results", type=Path, help="a benchmark's results.json")
    ap.add_argument("-o", "--out", type=Path, required=True, help="folder for the PNGs")
    ap.add_argument("--prefix", default="", help="file name prefix, e.g. faces64_")
    a = ap.parse_args(argv)
    result = json.loads(a.results.read_text(encoding="utf-8"))
    labels = result["benchmark"]["methods"]
    table = editability_table(result["images"], labels, seed=result["benchmark"].get("seed", 0))
    a.out.mkdir(parents=True, exist_ok=True)
    for m in labels:
        if table.get(m):
            print(plot_editability(table, m, a.out / f"{a.prefix}editability_{_file_label(m)}.png"))


if __name__ == "__main__":
    main()
