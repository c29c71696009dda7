"""Seconds per image of DHR's segmentation of a batch, one image after the other against
``dhr.engine.for_each_image``'s threads (docs/performance.md, GPU section).

Random targets, coarse images and VGG-sized error maps at ``--resolution`` (the SLIC superpixels and
the per-superpixel scores do not depend on the content's meaning); alternating order, wall seconds.

Usage: ``python scripts/segment_speed.py --batch 4 --resolution 1024 --workers 1,2``
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from dhr.engine import for_each_image
    from dhr.segmentation.domain import SegmentConfig, segment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    b, r = args.batch, args.resolution
    counts = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(max(counts))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, r, r, generator=g) * 2 - 1
    c = (x + 0.1 * torch.randn(b, 3, r, r, generator=g)).clamp(-1, 1)
    maps = [[torch.rand(1, r >> k, r >> k, generator=g) for k in range(5)] for _ in range(b)]

    def one(i: int):
        return segment(x[i], c[i], maps[i], config=SegmentConfig())

    one(0)  # SLIC's first call sets itself up
    best = {w: float("inf") for w in counts}
    for k in range(args.repeats):
        for w in counts if k % 2 == 0 else counts[::-1]:
            t = time.perf_counter()
            for_each_image(one, b, workers=w)
            best[w] = min(best[w], (time.perf_counter() - t) / b)
    for w, s in best.items():
        print(f"batch {b} at {r} px, {w} worker(s): {s:.3f} s per image ({best[counts[0]] / s:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
