"""``dhr bench-speed``: the optimised DHR path against the faithful loop, in one run (see docs/performance.md).

Exit codes: 0 done and every fast path's final losses within the tolerance of the faithful loop's,
1 done but some differ (the table says by how much), 2 bad options or a failed measurement.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("bench-speed")
    def bench_speed(
        cases: str = typer.Option("faces-64", "--cases",
                                  help="Comma-separated: faces-64 (bundled), fixture-64 (needs ../shared or "
                                  "DHR_SHARED), random-256 (~8 CPU-s per faithful iteration), random-1024 (GPU "
                                  "only)."),
        paths: str = typer.Option("faithful,fast", "--paths", help="Comma-separated: faithful, fast, "
                                  "fast-no-prefix-cache, fast-no-target-cache, fast-fused-adam (its loss "
                                  "differences are printed as the rounding sensitivity), fast-bf16 (ratios are "
                                  "against faithful)."),
        coarse_steps: int = typer.Option(20, "--coarse-steps", min=1, help="Coarse-inversion steps (reference: 40)."),
        refine_steps: int = typer.Option(30, "--refine-steps", min=1, help="Refinement iterations (reference: 100)."),
        weight_steps: int = typer.Option(None, "--weight-steps", min=0,
                                         help="Iterations tuning θ (default: half of --refine-steps, as 50/100)."),
        n_mean: int = typer.Option(10000, "--n-mean", min=2, help="Mapped samples of the mean latent."),
        batch: str = typer.Option("1", "--batch", help="Images per measurement; a comma list (1,2,4,8) measures "
                                  "each batch size (per-image cost)."),
        vectorize: bool = typer.Option(False, "--vectorize", help="Fast path: the batch together (vmap) instead of "
                                       "one image after the other."),
        repeats: int = typer.Option(2, "--repeats", min=1, help="Alternating repeats per (case, path)."),
        threads: int = typer.Option(1, "--bench-threads", min=1, help="Torch threads of each measuring process."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        autocast: str = typer.Option("fp32", "--autocast", help="fp32 or bf16 (fast path only)."),
        timeout: float = typer.Option(None, "--timeout", min=1e-3, help="Seconds allowed per measurement (> 0)."),
        json_path: Path = typer.Option(None, "--json", help="Also write the full report (every run) here."),
        warmup: bool = typer.Option(None, "--warmup/--no-warmup", help="Run each measurement once, untimed, at a "
                                    "tiny budget first (default: on for cuda, off for cpu)."),
        deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels (no TF32, no "
                                           "atomic-add convolutions): makes the loss-parity check meaningful on "
                                           "CUDA, where two runs of one path differ otherwise."),
    ) -> None:
        """Time DHR per image per stage (coarse, mask, refine), with CPU-seconds, peak memory and the
        ratio against the faithful loop (the authors' algorithm as a plain batch-1 loop), in one run.

        Every measurement runs in its own process; repeats alternate the order of the paths. The
        final losses of each fast path are compared with the faithful loop's (within 1 % or the
        table says by how much they differ).

        Example:

          dhr bench-speed --cases faces-64,fixture-64 --coarse-steps 20 --refine-steps 30 --json speed.json
        """
        from dhr.cli.run import usage_error
        from dhr.errors import DHRError
        from dhr.speed import SpeedSettings, format_report, run_benchmark

        try:
            sizes = [int(b) for b in batch.split(",") if b.strip()]
        except ValueError:
            raise usage_error(f"--batch {batch!r}: give integers, e.g. 1 or 1,2,4,8") from None
        case_list = [c.strip() for c in cases.split(",") if c.strip()]
        path_list = [p.strip() for p in paths.split(",") if p.strip()]
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise usage_error("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
        if not sizes or not case_list or not path_list:
            raise usage_error("--batch, --cases and --paths each need at least one value")
        if timeout is not None and not math.isfinite(timeout):
            raise usage_error(f"--timeout {timeout}: give a number of seconds (or leave it out for no limit)")
        if json_path is not None:  # checked before the measurements, which take minutes
            if json_path.is_dir():
                raise usage_error(f"--json {json_path} is a folder; give a file name, e.g. {json_path / 'speed.json'}")
            try:
                json_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise usage_error(f"--json {json_path}: cannot create its folder ({e.strerror or e})") from None
            if not os.access(json_path.parent, os.W_OK):
                raise usage_error(f"--json {json_path}: its folder is not writable")
        reports = {}
        try:
            for b in sizes:
                settings = SpeedSettings(coarse_steps=coarse_steps, refine_steps=refine_steps,
                                         weight_steps=refine_steps // 2 if weight_steps is None else weight_steps,
                                         n_mean_samples=n_mean, batch=b, vectorize=vectorize, threads=threads,
                                         device=device, autocast=autocast,
                                         warmup=device == "cuda" if warmup is None else warmup,
                                         deterministic=deterministic)
                report = run_benchmark(case_list, settings, repeats=repeats, paths=path_list, timeout=timeout,
                                       log=lambda line: typer.echo(line, err=True))
                typer.echo(format_report(report))
                reports[str(b)] = report
        except DHRError as e:
            raise usage_error(str(e)) from None
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            data = reports[str(sizes[0])] if len(sizes) == 1 else {"batches": reports}
            json_path.write_text(json.dumps(data, indent=2))
            typer.echo(f"wrote {json_path}")
        equal = all(v.get("losses_equal", True) for r in reports.values() for c in r["cases"].values()
                    for v in c["paths"].values())
        raise typer.Exit(0 if equal else 1)
