"""Benchmark of inversion methods on equal footing (``dhr bench``); see ``docs/bench.md``.

:func:`run_benchmark` runs every method on the same aligned images with the same seeds, encoder and
step rules and writes JSON, Markdown and plots; :func:`occlude` makes the synthetic occluders of
the occlusion benchmark.

Modules: ``protocol`` (options, variants, step budgets: what is compared), ``inputs`` (the images),
``occlusion`` (synthetic occluders), ``scoring`` (metrics, memory, evaluation models), ``run`` (the
loop), ``merge`` (sharded runs), ``stats`` (bootstrap), ``summary`` (statistics and verdicts over
the results), ``plots`` and ``report`` (Markdown, JSON and figures), ``sweep`` (choosing DHR's
settings on training crops).

The names below are imported from their modules on first use, so that ``python -m
dhr.bench.report`` (or ``.sweep``) does not import the module it runs twice and a module such as
:mod:`dhr.bench.inputs` can be used without loading the whole benchmark.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dhr.bench.merge import merge_results
    from dhr.bench.occlusion import FILLS, SHAPES, Occluded, occlude
    from dhr.bench.protocol import ABLATIONS, BENCH_METHODS, BenchConfig, parse_ablations, parse_methods
    from dhr.bench.report import summarize, verdicts, write_report
    from dhr.bench.run import run_benchmark

_SOURCES = {
    "ABLATIONS": "protocol", "BENCH_METHODS": "protocol", "BenchConfig": "protocol",
    "parse_ablations": "protocol", "parse_methods": "protocol",
    "FILLS": "occlusion", "SHAPES": "occlusion", "Occluded": "occlusion", "occlude": "occlusion",
    "merge_results": "merge", "run_benchmark": "run",
    "summarize": "report", "verdicts": "report", "write_report": "report",
}

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


def __getattr__(name: str) -> Any:
    """Imports ``name`` from its module on first use (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
