"""Measures the latency of one edit (move the W+ code, re-render, no paste) on an inverted photo.

1. Loads a model (``--model``: a bundled name, default ``faces-64``, or a model folder).
2. Inverts one photo (``--photo``; default the scikit-image astronaut) with ``--method`` (default
   ``dhr``, whose results carry per-image weights and a feature, the costly kind to re-render), on
   a short budget (``--steps``: coarse steps and refinement iterations; an edit never optimises,
   so its cost does not depend on how long the inversion ran).
3. Runs ``--warmup`` untimed edits, then times ``--n`` calls of
   ``pipe.edit(inv, <first direction>=1.0, paste=False)`` (CUDA synchronised when on a GPU),
   alternating with ``--n`` renders of the same edit the way edits rendered before the editing fast
   path (per-image weights rebuilt and substituted with ``functional_call`` on every call).
4. Prints one JSON object: ``mean_ms``, ``p95_ms`` (nearest-rank), ``mean_cpu_ms`` (CPU time of this
   process per edit: what a busy shared machine inflates less), ``uncached_mean_ms`` (the old
   render), ``device``, ``model`` and the settings used.

Usage: ``python scripts/edit_speed.py [--model NAME|PATH] [--photo FILE] [--n 20] [--device auto]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from dhr.errors import DHRError
from dhr.pipeline import Pipeline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _uncached_edit(pipe: Pipeline, inv, direction: str) -> torch.Tensor:
    """The edit as rendered before the fast path: weights stacked and substituted on every call."""
    from dhr.editing import apply_edits
    from dhr.refinement.render import hybrid_forward, stack_params

    i = inv.inversion
    G = pipe.generator
    ws = apply_edits(i.ws.to(pipe.device)[None], [(pipe.directions[direction], 1.0)])
    with torch.no_grad():
        theta = stack_params(G, [i.weight_delta])
        if i.feature is None:
            return hybrid_forward(G, theta, ws)
        return hybrid_forward(G, theta, ws, feature=i.feature[None].to(ws), resolution=i.feature_resolution,
                              feature_mask=None if i.feature_mask is None else i.feature_mask[None].to(ws))


def measure(model: str, photo: str | None, n: int, warmup: int, device: str, method: str,
            threads: int | None, steps: int = 4) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    pipe = Pipeline.from_pretrained(model, device=device, method=method)
    if method == "dhr":
        from dhr.config import apply_overrides

        pipe.config = apply_overrides(pipe.config, [f"coarse.steps={steps}", f"refine.steps={steps}",
                                                    f"refine.weight_steps={steps // 2}"])
    names = [] if pipe.model.directions is None else pipe.model.directions.names()
    if not names:
        raise DHRError(f"model {pipe.model.name!r} has no edit directions to time")
    direction = names[0]
    if photo is None:
        from dhr.cli.example import example_photo

        source = example_photo("astronaut")
        photo_name = "skimage:astronaut"
    else:
        source, photo_name = photo, photo
    inv = pipe.invert(source, whole_image=True)[0]
    for _ in range(warmup):
        pipe.edit(inv, {direction: 1.0}, paste=False)
    _sync(pipe.device)
    times, uncached, cpu = [], [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe.edit(inv, {direction: 1.0}, paste=False)
        _sync(pipe.device)
        times.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
        if inv.inversion.weight_delta:
            t0 = time.perf_counter()
            _uncached_edit(pipe, inv, direction)
            _sync(pipe.device)
            uncached.append((time.perf_counter() - t0) * 1000.0)
    return {
        "mean_ms": round(statistics.fmean(times), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "mean_cpu_ms": round(statistics.fmean(cpu), 3),
        "uncached_mean_ms": round(statistics.fmean(uncached), 3) if uncached else None,
        "uncached_p95_ms": round(percentile(uncached, 95), 3) if uncached else None,
        "device": str(pipe.device),
        "model": pipe.model.name,
        "model_path": str(pipe.model.path),
        "resolution": pipe.resolution,
        "direction": direction,
        "method": inv.method,
        "photo": photo_name,
        "face": inv.stem,
        "n": n,
        "warmup": warmup,
        "inversion_steps": steps if method == "dhr" else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="faces-64", help="bundled model name or model folder")
    ap.add_argument("--photo", default=None, help="photo to invert (default: the scikit-image astronaut)")
    ap.add_argument("--n", type=int, default=20, help="timed edits")
    ap.add_argument("--warmup", type=int, default=2, help="untimed edits first")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--method", default="dhr", help="inversion method (the edit itself never optimises)")
    ap.add_argument("--steps", type=int, default=4, help="dhr: coarse steps and refinement iterations of the "
                    "inversion (the edit's cost does not depend on them)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.warmup < 0:
        ap.error("--n must be >= 1 and --warmup >= 0")
    try:
        result = measure(args.model, args.photo, args.n, args.warmup, args.device, args.method, args.threads,
                         args.steps)
    except DHRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
