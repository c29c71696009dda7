"""Benchmark of inversion methods on equal footing (``dhr bench``); see ``docs/bench.md``.

:func:`run_benchmark` runs every method on the same aligned images with the same seeds, encoder and
step rules and writes JSON, Markdown and plots; :func:`occlude` makes the synthetic occluders of
the occlusion benchmark.

Modules: ``protocol`` (options, variants, step budgets: what is compared), ``inputs`` (the images),
``occlusion`` (synthetic occluders), ``scoring`` (metrics, memory, evaluation models), ``run`` (the
loop), ``merge`` (sharded runs), ``stats`` (bootstrap), ``summary`` (statistics and verdicts over
the results), ``plots`` and ``report`` (Markdown, JSON and figures), ``sweep`` (choosing DHR's
settings on training crops).
"""

from __future__ import annotations

from dhr.bench.occlusion import FILLS, SHAPES, Occluded, occlude
from dhr.bench.merge import merge_results
from dhr.bench.protocol import ABLATIONS, BENCH_METHODS, BenchConfig, parse_ablations, parse_methods
from dhr.bench.report import summarize, verdicts, write_report
from dhr.bench.run import run_benchmark

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
