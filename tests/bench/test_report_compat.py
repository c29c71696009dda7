"""Reports written by earlier benchmark runs (``docs/bench-*/results.json``) still render."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from dhr.bench.report import markdown, summarize, write_report

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load(name: str) -> dict:
    path = DOCS / name / "results.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_committed_report_renders_to_its_committed_markdown(tmp_path):
    """The held-out benchmark of docs/bench-faces64-v2: Markdown identical to the one written at run
    time, the stored summary recomputed from the per-image records, and every plot re-drawn."""
    result = _load("bench-faces64-v2")
    assert markdown(copy.deepcopy(result)) == (DOCS / "bench-faces64-v2" / "report.md").read_text(encoding="utf-8")
    labels = result["benchmark"]["methods"]
    again = summarize(result["images"], labels)
    for m, metrics in result["summary"].items():
        for k, stats in metrics.items():
            assert again[m][k]["mean"] == pytest.approx(stats["mean"], rel=1e-12), (m, k)
            assert again[m][k]["n"] == stats["n"]
    paths = write_report(copy.deepcopy(result), tmp_path)
    for key in ("metrics_plot", "tradeoff_plot", "editability_dhr"):
        with Image.open(paths[key]) as im:
            assert im.size[0] > 300
    assert json.loads((tmp_path / "results.json").read_text())["images"] == result["images"]


def test_the_oldest_report_still_renders():
    """docs/bench-faces64 predates the occluder-detection and editability sections; it renders without them."""
    result = _load("bench-faces64")
    md = markdown(copy.deepcopy(result))
    assert "## Reconstruction" in md and "## Verdicts" in md and "## Failures" in md
    assert all(f"| {m} |" in md for m in result["benchmark"]["methods"])
