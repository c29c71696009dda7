"""Times one θ-tuned DHR refinement iteration at 1 and 2 torch threads (docs/performance.md "Threads").

The OpenMP wait policy is whatever the environment says when this starts (set ``OMP_WAIT_POLICY``
and, for GNU OpenMP, ``GOMP_SPINCOUNT`` in front of the command); the script prints it. Per case:
forward with the blend, losses, ``loss_out``'s gradient to f and ``loss_in``'s to θ, as
:mod:`dhr.refinement`'s loop does; the minimum over alternating repeats, in ms.

Usage::

    OMP_WAIT_POLICY=PASSIVE python scripts/thread_speed.py --cases faces-64,fixture-64 --repeats 6
    OMP_WAIT_POLICY=ACTIVE python scripts/thread_speed.py --cases faces-64
"""

from __future__ import annotations

import argparse
import os
import time

import torch  # before dhr: the wait policy stays the one the environment gave
import torch.nn.functional as F


def iteration(case: str):
    from dhr.refinement.hybrid import resolve_feature_resolution, tuned_parameter_names
    from dhr.refinement.losses import hybrid_loss_terms, target_maps_fn
    from dhr.refinement.render import hybrid_forward
    from dhr.speed import SpeedSettings, _build_case

    G, lp, _, x, occ, _ = _build_case(case, SpeedSettings())
    r = resolve_feature_resolution(G, None)
    with torch.no_grad():
        ws = G.sample_ws(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(7)))
        f = G.run_until(ws, r).features.clone().requires_grad_(True)
    params = dict(G.named_parameters())
    theta = {n: params[n].detach()[None].clone().requires_grad_(True) for n in tuned_parameter_names(G)}
    soft = F.adaptive_avg_pool2d(occ, r)
    maps_of = target_maps_fn(lp, x)

    def run() -> None:
        image = hybrid_forward(G, theta, ws, feature=f, feature_mask=soft, resolution=r)
        t = hybrid_loss_terms(image, x, lp, mask=occ, soft_mask=soft, l2_channel_sum=True, maps=maps_of(image))
        torch.autograd.grad((t["l2_out"] + t["lpips_out"]).sum(), [f], retain_graph=True)
        torch.autograd.grad((t["l2_in"] + t["lpips_in"]).sum(), list(theta.values()))

    return run, G.config.synthesis_macs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="faces-64,fixture-64")
    ap.add_argument("--threads", default="1,2", help="thread counts to alternate")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    for case in (c.strip() for c in args.cases.split(",") if c.strip()):
        run, macs = iteration(case)
        times: dict[int, list[float]] = {t: [] for t in counts}
        for k in range(args.repeats):
            for t in counts if k % 2 == 0 else counts[::-1]:
                torch.set_num_threads(t)
                run()
                t0 = time.perf_counter()
                run()
                times[t].append(time.perf_counter() - t0)
        best = {t: min(v) * 1000 for t, v in times.items()}
        base = best[counts[0]]
        cells = ", ".join(f"{t} thread(s) {ms:.1f} ms ({base / ms:.2f}x)" for t, ms in best.items())
        print(f"{case} ({macs / 1e9:.2f} G multiply-adds per forward): {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
