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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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

_LOWER = {"mse", "lpips", "time_s", "peak_mem_mb", "ood_lpips", "ood_mse", "occ_lpips", "occ_mse"}
_HIGHER = {"psnr", "psnr_ref", "ssim", "id", "iou_ood", "id_kept"}
_ABS_HIGHER = {"attr_per_unit"}

_NAMES = {
    "mse": "MSE", "psnr": "PSNR (dB)", "psnr_ref": "PSNR 2/MSE (dB)", "ssim": "SSIM", "lpips": "LPIPS",
    "id": "ID sim", "time_s": "time (s)", "peak_mem_mb": "peak mem (MB)", "iou_ood": "OOD IoU",
    "attr_per_unit": "attr/unit", "id_kept": "ID kept", "ood_lpips": "OOD LPIPS", "ood_mse": "OOD MSE",
    "occ_lpips": "occluder LPIPS", "occ_mse": "occluder MSE",
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


def verdicts(results: Sequence[dict], labels: Sequence[str], reference: str = "dhr") -> list[dict]:
    """Does ``reference`` beat each other method, metric by metric?

    A method is better on a metric when its mean is better in the metric's direction
    (:func:`metric_direction`); the record also gives the relative difference of the means and the
    paired count of images on which the reference is strictly better.

    Returns:
        A list of ``{"metric", "other", "reference_mean", "other_mean", "better", "relative", "wins",
        "pairs", "text"}``; empty when ``reference`` has no results.
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
            a = float(np.mean(list(ref_vals.values())))
            b = float(np.mean(list(oth_vals.values())))
            pairs = sorted(set(ref_vals) & set(oth_vals))
            if direction == "lower":
                better, wins = a < b, sum(ref_vals[i] < oth_vals[i] for i in pairs)
            elif direction == "higher":
                better, wins = a > b, sum(ref_vals[i] > oth_vals[i] for i in pairs)
            else:
                better, wins = abs(a) > abs(b), sum(abs(ref_vals[i]) > abs(oth_vals[i]) for i in pairs)
            denom = abs(b)
            rel = (a - b) / denom if denom > 0 else math.nan
            if direction == "abs_higher" and denom > 0:
                rel = (abs(a) - abs(b)) / denom
            if a == b:
                word = "ties with"
            else:
                word = "beats" if better else "does not beat"
            how = ""
            if math.isfinite(rel) and a != b:
                size = abs(rel) * 100
                if direction == "lower":
                    how = f"{size:.1f}% {'lower' if a < b else 'higher'}"
                elif direction == "higher":
                    how = f"{size:.1f}% {'higher' if a > b else 'lower'}"
                else:
                    how = f"{size:.1f}% {'larger' if abs(a) > abs(b) else 'smaller'} magnitude"
                if key.rsplit(".", 1)[-1] in ("psnr", "psnr_ref"):
                    how = f"{a - b:+.2f} dB"
            detail = f"{how}; " if how else ""
            text = (f"{reference} {word} {other} on {metric_label(key)}: {_fmt(a, key)} vs {_fmt(b, key)} "
                    f"({detail}better on {wins}/{len(pairs)} images)")
            short = ("=" if a == b else ("yes" if better else "no")) + (f" ({how})" if how else "")
            out.append({"metric": key, "other": other, "reference_mean": a, "other_mean": b, "better": bool(better),
                        "relative": rel if math.isfinite(rel) else None, "wins": int(wins), "pairs": len(pairs),
                        "short": short, "text": text})
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
        f"- DHR parsing: {p.get('parsing', 'n/a')}",
        f"- time: {p['time']}; memory: {p['memory']}",
        "- edits: " + (", ".join(f"{e['direction']} {e['strength']:+g}" for e in b["edits"]) or "none"),
        "",
        "Values are mean ± standard deviation over the images.", "",
        "## Reconstruction", "",
    ]
    lines += _table(summary, labels, ["mse", "psnr", "psnr_ref", "ssim", "lpips", "id", "time_s", "peak_mem_mb"])
    region_keys = [f"{r}{k}" for r in ("in.", "ood.") for k in ("mse", "psnr", "ssim", "lpips")]
    lines += ["", "## Regions (DHR mask of each image)", ""] + _table(summary, labels, region_keys)
    if b["occlusion"]:
        occ_keys = ["iou_ood"] + [f"{r}{k}" for r in ("occ_in.", "occ_out.") for k in ("mse", "psnr", "lpips")]
        lines += ["", "## Occlusion (ground-truth occluder masks)", ""] + _table(summary, labels, occ_keys)
        ious = [r["reference_mask"].get("iou_ood") for r in result["images"] if r.get("reference_mask")]
        ious = [v for v in ious if v is not None]
        if ious:
            lines += ["", (f"IoU of the reference DHR out-of-domain mask with the occluder: {np.mean(ious):.3f} "
                           f"(n={len(ious)})")]
    edit_keys = sorted({k for m in labels for k in summary.get(m, {}) if k.startswith("edit.")})
    if edit_keys:
        lines += ["", "## Editing", ""] + _table(summary, labels, edit_keys)
    lines += ["", "## Verdicts (does dhr beat each method?)", ""]
    if result["verdicts"]:
        main = ["mse", "psnr", "ssim", "lpips", "id", "ood.lpips", "iou_ood", "occ_in.lpips"]
        lines += ["Main metrics, in words (mean over images; paired wins per image):", ""]
        for key in main:
            lines += [f"- {v['text']}" for v in result["verdicts"] if v["metric"] == key]
        others = [o for o in labels if o != "dhr" and any(v["other"] == o for v in result["verdicts"])]
        keys = sorted({v["metric"] for v in result["verdicts"]},
                      key=lambda k: (main.index(k) if k in main else len(main), k))
        cell = {(v["metric"], v["other"]): v["short"] for v in result["verdicts"]}
        lines += ["", "Every metric (does dhr beat the column's method? by how much):", "",
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
    for k, sheet in enumerate(sheets):
        if sheet.get("rows"):
            paths[f"qualitative_{k}"] = plot_qualitative(sheet, out / f"qualitative_{k}.png")
    paths.update(extra or {})
    result["files"] = {k: str(v) for k, v in paths.items()}
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    paths["json"].write_text(json.dumps(_clean(result), indent=2, default=_json_default), encoding="utf-8")
    return paths
