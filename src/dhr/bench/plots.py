"""The benchmark's figures: metrics per method, fidelity against editability, editability per
method, qualitative sheets. Drawn on matplotlib's Agg canvas (:func:`figure`), never through pyplot;
matplotlib (the ``bench`` extra) is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dhr.bench.summary import EDIT_MEASURES, metric_direction, metric_label
from dhr.io.image import tensor_to_uint8

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "figure",
    "file_label",
    "plot_editability",
    "plot_fidelity_editability",
    "plot_metrics",
    "plot_qualitative",
]


def figure(w: float, h: float) -> Figure:
    """A matplotlib figure of ``w`` x ``h`` inches at 100 dpi on the Agg canvas (no GUI, no pyplot state).

    Raises:
        ImportError: matplotlib is not installed (``pip install 'dhr[bench]'``).
    """
    # matplotlib is optional (the bench extra): imported when a figure is drawn, not with dhr.bench.
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
    fig = figure(4.2 * cols, 3.2 * rows)
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
    """Mean over the edits of method ``m``'s summary means of ``edit.*.<leaf>`` (NaN when none)."""
    vals = [s["mean"] for k, s in summary.get(m, {}).items() if k.startswith("edit.") and k.endswith("." + leaf)]
    return float(np.mean(vals)) if vals else math.nan


def plot_fidelity_editability(summary: dict, labels: Sequence[str], path: Path) -> Path:
    """LPIPS (fidelity) against |attribute change per unit| of the first scored edit, and against the
    out-of-domain change under edits (mean over the edits), one point per method."""
    attr_keys = sorted({k for m in labels for k in summary.get(m, {}) if k.endswith(".attr_per_unit")})
    attr_key = attr_keys[0] if attr_keys else None
    fig = figure(10, 4)
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
    fig = figure(3.3 * len(EDIT_MEASURES), 3.4)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for i, (leaf, title) in enumerate(EDIT_MEASURES):
        ax = fig.add_subplot(1, len(EDIT_MEASURES), i + 1)
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
    """``(H, W, 3)`` uint8 of an array (as is) or a ``([1,] 3, H, W)`` tensor in [-1, 1]."""
    if isinstance(x, np.ndarray):
        return x
    t = x[0] if isinstance(x, torch.Tensor) and x.ndim == 4 else x
    return tensor_to_uint8(t)


def _mask_image(m: Any) -> np.ndarray:
    """A ``(..., H, W)`` mask in [0, 1] as an ``(H, W, 3)`` uint8 grey image."""
    a = np.asarray(m.detach().cpu().float().numpy() if hasattr(m, "detach") else m, dtype=np.float64)
    a = a.reshape(a.shape[-2], a.shape[-1])
    return np.repeat((a * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def plot_qualitative(sheet: dict, path: Path) -> Path:
    """Rows = methods; columns = input, mask, inversion, edits."""
    rows = sheet["rows"]
    ncols = 3 + max(len(r["edits"]) for r in rows)
    fig = figure(1.9 * ncols, 1.9 * len(rows) + 0.4)
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


def file_label(label: str) -> str:
    """``dhr[feature-res=16]`` -> ``dhr_feature-res_16`` (safe in a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
