"""Do CUDA graphs pay for DHR's refinement iteration? A probe for the next lent GPU.

On a GPU, one refinement iteration of a config-f generator at batch 1 is launch-bound: ~3,000
small kernels whose arithmetic an H200 does in a few ms took ~57 ms (docs/performance.md, "GPU").
A CUDA graph replays a captured iteration with one launch. This script measures, on the fast
path's own building blocks (``dhr.refinement.loop``: per-image θ, ``BlendedForward``,
``hybrid_loss_terms``, ``set_grads``), with Adam in its capturable form:

1. eager: ``--tuned`` θ-tuned iterations then ``--frozen`` θ-frozen ones (ms per iteration);
2. graphs (CUDA only): the same run from the same start, where the first ``--warmup`` iterations of
   each phase run eagerly on a side stream (Adam's state and the cached prefix are created there),
   one iteration per phase is captured, and the rest are replays (ms per replay, capture seconds);
3. the final losses of both runs and their relative difference (if the capture fails, the report
   keeps the eager numbers and says why under ``graphs.failed``). A replay runs the same kernels, so
   with ``--deterministic`` the two runs should agree exactly; with the default kernels, to the
   run-to-run noise that docs/performance.md reports for two eager runs.

Without a CUDA device only (1) runs and the JSON says why (the test suite runs it that way so the
script does not rot). Nothing here is used by the library: it decides whether graph capture is worth
building into ``dhr.refinement``.

Usage: ``python scripts/cuda_graph_probe.py --case random-1024 --device cuda [--batch 8]
[--precision bf16] [--deterministic] [--json out.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Run:
    """One refinement run of the fast path for ``(x, ws, mask)``, an iteration per call."""

    def __init__(self, G, lp, x, ws, mask, *, precision: str, capturable: bool) -> None:
        from dhr.refinement.hybrid import resolve_feature_resolution, tuned_parameter_names
        from dhr.refinement.loop import BlendedForward, generator_feature, per_image_weights
        from dhr.refinement.losses import target_maps_fn

        b = x.shape[0]
        r = resolve_feature_resolution(G, None)
        self.x, self.mask, self.lp, self.precision = x, mask, lp, precision
        self.soft = F.adaptive_avg_pool2d(mask, r)
        self.theta = per_image_weights(G, tuned_parameter_names(G), b)
        self.f = generator_feature(G, ws, r, "const")
        kw = {"capturable": True} if capturable else {}
        self.opt_theta = torch.optim.Adam(list(self.theta.values()), lr=1.5e-3, **kw)
        self.opt_f = torch.optim.Adam([self.f], lr=0.09, **kw)
        self.generate = BlendedForward(G, ws, r, self.soft, "const")
        self.maps = target_maps_fn(lp, x)

    def __call__(self, tune: bool) -> torch.Tensor:
        """One iteration (both losses at one forward, both gradients, both steps); ``(2, B)`` losses."""
        from dhr.refinement.losses import hybrid_loss_terms
        from dhr.refinement.loop import set_grads

        device = self.x.device
        # graphs replay whatever autocast cached while capturing: its weight-cast cache must be off
        amp = (torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
               if self.precision == "bf16" else contextlib.nullcontext())
        with amp:
            image = self.generate(self.theta, self.f, theta_final=not tune)
            t = hybrid_loss_terms(image, self.x, self.lp, mask=self.mask, soft_mask=self.soft,
                                  l2_channel_sum=True, maps=self.maps(image))
            loss_in = t["l2_in"] + t["lpips_in"]
            loss_out = t["l2_out"] + t["lpips_out"]
        set_grads(loss_out, [self.f], retain_graph=tune)
        if tune:
            set_grads(loss_in, list(self.theta.values()))
        self.opt_f.step()
        if tune:
            self.opt_theta.step()
        return torch.stack([loss_in.detach().float(), loss_out.detach().float()])


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def eager(make: Callable[[], _Run], device: torch.device, tuned: int, frozen: int) -> dict:
    """Every iteration run eagerly; ms per iteration per phase and the final losses."""
    run = make()
    curve: list[torch.Tensor] = []
    phases = {}
    for name, n, tune in (("tuned", tuned, True), ("frozen", frozen, False)):
        if n == 0:
            continue
        first = _timed(lambda: curve.append(run(tune)), device)  # the frozen phase's first call builds the prefix
        rest = _timed(lambda: [curve.append(run(tune)) for _ in range(n - 1)], device) if n > 1 else 0.0
        phases[name] = {"first_ms": round(first * 1e3, 2),
                        "ms_per_iteration": round(rest * 1e3 / max(n - 1, 1), 2) if n > 1 else None}
    final = curve[-1].cpu()
    return {"phases": phases, "final_loss_in": final[0].tolist(), "final_loss_out": final[1].tolist()}


def graphed(make: Callable[[], _Run], device: torch.device, tuned: int, frozen: int, warmup: int) -> dict:
    """The same run with all but the first ``warmup`` iterations of each phase replayed from a graph."""
    run = make()
    last = None
    phases = {}
    side = torch.cuda.Stream(device)
    for name, n, tune in (("tuned", tuned, True), ("frozen", frozen, False)):
        if n == 0:
            continue
        k = min(warmup, n)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(k):
                last = run(tune)
        torch.cuda.current_stream(device).wait_stream(side)
        if n == k:
            phases[name] = {"replays": 0}
            continue
        graph = torch.cuda.CUDAGraph()
        _sync(device)
        t = time.perf_counter()
        with torch.cuda.graph(graph):
            static = run(tune)  # recorded, not executed
        _sync(device)
        capture = time.perf_counter() - t
        replay = _timed(lambda: [graph.replay() for _ in range(n - k)], device)
        last = static
        phases[name] = {"capture_s": round(capture, 3), "replays": n - k,
                        "ms_per_replay": round(replay * 1e3 / (n - k), 2)}
        del graph
    final = last.clone().cpu()
    return {"phases": phases, "final_loss_in": final[0].tolist(), "final_loss_out": final[1].tolist()}


def probe(case: str, *, device: str = "cpu", batch: int = 1, tuned: int = 50, frozen: int = 50,
          warmup: int = 3, precision: str = "fp32", deterministic: bool = False, seed: int = 0) -> dict:
    """Runs the eager and (on CUDA) the graphed refinement and returns the report."""
    from dhr.devices import use_deterministic_kernels
    from dhr.speed import SpeedSettings, _build_case

    if deterministic:
        use_deterministic_kernels()
    dev = torch.device(device)
    G, lp, _, x, occluders, notes = _build_case(case, SpeedSettings(device=device, batch=batch, seed=seed))
    with torch.no_grad():
        z = torch.randn(batch, G.style_dim, generator=torch.Generator().manual_seed(seed + 7)).to(dev)
        ws = G.sample_ws(z)  # a start code that is not the target's (as a coarse inversion's would be)
    make = lambda capturable: _Run(G, lp, x, ws, occluders, precision=precision, capturable=capturable)  # noqa: E731
    report = {"case": case, "device": str(dev), "batch": batch, "tuned": tuned, "frozen": frozen,
              "warmup": warmup, "precision": precision, "deterministic": deterministic, "notes": notes,
              "torch": torch.__version__,
              "eager": eager(lambda: make(False), dev, tuned, frozen)}
    if dev.type != "cuda":
        report["graphs"] = {"skipped": "CUDA graphs need a CUDA device; run with --device cuda on a GPU"}
        return report
    report["device_name"] = torch.cuda.get_device_name(dev)
    try:
        report["graphs"] = g = graphed(lambda: make(True), dev, tuned, frozen, warmup)
    except Exception as e:  # noqa: BLE001 - a first run on a new device: keep the eager numbers and the cause
        import traceback

        report["graphs"] = {"failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        return report
    e = report["eager"]
    for name in ("tuned", "frozen"):
        ms, rep = e["phases"].get(name, {}).get("ms_per_iteration"), g["phases"].get(name, {}).get("ms_per_replay")
        if ms and rep:
            g["phases"][name]["speedup"] = round(ms / rep, 2)
    g["final_rel_diff"] = max(abs(a - b) / max(abs(a), 1e-12)
                              for key in ("final_loss_in", "final_loss_out") for a, b in zip(e[key], g[key]))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="random-1024", help="a dhr bench-speed case (faces-64, fixture-64, random-256, ...)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1, help="images refined together (B > 1: vmap over per-image θ)")
    ap.add_argument("--tuned", type=int, default=50, help="θ-tuned iterations (the reference: 50)")
    ap.add_argument("--frozen", type=int, default=50, help="θ-frozen iterations (the reference: 50)")
    ap.add_argument("--warmup", type=int, default=3, help="eager iterations per phase before the capture")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--deterministic", action="store_true", help="deterministic kernels (exact comparison)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if min(args.batch, args.warmup) < 1 or min(args.tuned, args.frozen) < 0 or args.tuned + args.frozen < 1:
        ap.error("--batch and --warmup must be >= 1, --tuned/--frozen >= 0 and not both 0")
    torch.set_num_threads(args.threads)
    report = probe(args.case, device=args.device, batch=args.batch, tuned=args.tuned, frozen=args.frozen,
                   warmup=args.warmup, precision=args.precision, deterministic=args.deterministic)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
