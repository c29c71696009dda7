"""Benchmark of inversion methods on equal footing (``dhr bench``); see ``docs/bench.md``.

:func:`run_benchmark` runs every method on the same aligned images with the same seeds, encoder and
step rules and writes JSON, Markdown and plots; :func:`occlude` makes the synthetic occluders of
the occlusion benchmark.
"""

from __future__ import annotations

from dhr.bench.occlusion import FILLS, SHAPES, Occluded, occlude
from dhr.bench.report import summarize, verdicts, write_report
from dhr.bench.run import (
    ABLATIONS,
    BENCH_METHODS,
    BenchConfig,
    merge_results,
    parse_ablations,
    parse_methods,
    run_benchmark,
)

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "FILLS",
    "SHAPES",
    "BenchConfig",
    "Occluded",
    "merge_results",
    "occlude",
    "parse_ablations",
    "parse_methods",
    "run_benchmark",
    "summarize",
    "verdicts",
    "write_report",
]
