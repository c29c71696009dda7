"""Benchmark reports: JSON, Markdown and plots of a results dict.

The statistics it prints are computed by :mod:`dhr.bench.summary` (summaries, paired verdicts,
editability) and the figures drawn by :mod:`dhr.bench.plots`; both are re-exported here, where
earlier code imported them from. :func:`markdown` renders any ``results.json`` written since the
benchmark exists (``docs/bench-*/``), so old reports can be re-rendered.

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

from dhr.bench.plots import (
    file_label,
    plot_editability,
    plot_fidelity_editability,
    plot_metrics,
    plot_qualitative,
)
from dhr.bench.stats import N_BOOT
from dhr.bench.summary import (
    DETECTION_MEASURES,
    EDIT_MEASURES,
    editability_table,
    flatten_entry,
    format_value,
    metric_direction,
    metric_label,
    occluder_detection,
    summarize,
    verdicts,
)

__all__ = [
    "editability_table",
    "flatten_entry",
    "main",
    "markdown",
    "metric_direction",
    "metric_label",
    "occluder_detection",
    "plot_editability",
    "plot_fidelity_editability",
    "plot_metrics",
    "plot_qualitative",
    "summarize",
    "verdicts",
    "write_report",
]


def _table(summary: dict, labels: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Markdown rows ``mean ± std`` of ``keys`` (those present) per method."""
    keys = [k for k in keys if any(k in summary.get(m, {}) for m in labels)]
    if not keys:
        return []
    lines = ["| method | " + " | ".join(metric_label(k) for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for m in labels:
        cells = []
        for k in keys:
            s = summary.get(m, {}).get(k)
            cells.append("n/a" if s is None else f"{format_value(s['mean'], k)} ± {format_value(s['std'], k)}")
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
                lines.append(f"| {DETECTION_MEASURES[k]} | {m:.3f} | [{lo:.3f}, {hi:.3f}] | {n} |")
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
                for leaf, _ in EDIT_MEASURES]
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
                                 f"{format_value(v[0], c)} [{format_value(v[1], c)}, {format_value(v[2], c)}]")
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
            paths[f"editability_{m}"] = plot_editability(table, m, out / f"editability_{file_label(m)}.png")
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
            print(plot_editability(table, m, a.out / f"{a.prefix}editability_{file_label(m)}.png"))


if __name__ == "__main__":
    main()
