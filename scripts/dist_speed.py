"""Throughput of the distributed engine against the in-process batch, measured in one run.

1. Takes the first ``--n`` photos of ``--photos`` (a folder; default the aligned faces of
   ``../shared/datasets``, else copies of the scikit-image astronaut).
2. Runs the same job (invert with ``--method``, one ``--edit``) twice on ``--model``:
   a. in process, one photo after another, torch using ``--threads-seq`` threads (as ``dhr run``);
   b. with :func:`dhr.distributed.run_distributed` on a local cluster of ``--workers`` processes,
      one torch thread each (as ``dhr dist``), cluster start-up included.
3. Prints one JSON object with the two wall times, photos per minute and ``speedup`` = sequential
   time / distributed time, and whether both wrote byte-identical inversion PNGs. That check is
   meaningful with ``--threads-seq 1`` only: torch's results depend slightly on its thread count.

Usage: ``python scripts/dist_speed.py [--n 8] [--workers 2] [--method dhr] [--model faces-64]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _photos(folder: str | None, n: int, tmp: Path) -> list[str]:
    candidates = [Path(folder)] if folder else [REPO.parent / "shared" / "datasets" / "aligned"]
    for c in candidates:
        if c.is_dir():
            files = sorted(p for p in c.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
            if files:
                return [str(p) for p in files]
    from skimage import data
    from PIL import Image

    src = tmp / "astronaut.png"
    Image.fromarray(data.astronaut()).save(src)
    out = []
    for i in range(n):  # distinct files (names and bytes) so nothing is skipped or cached
        p = tmp / f"astro{i}.png"
        shutil.copyfile(src, p)
        with open(p, "ab") as f:
            f.write(bytes([i]))
        out.append(str(p))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="faces-64")
    ap.add_argument("--photos", default=None)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--threads-seq", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--method", default="dhr")
    ap.add_argument("--edit", default="age=2")
    a = ap.parse_args(argv)

    import torch

    from dhr.distributed import PipelineSpec, run_distributed
    from dhr.jobs import PhotoJob, process_photo
    from dhr.records import InputRecord, OutputTree

    name, value = a.edit.split("=")
    job = PhotoJob.from_lists([{name: float(value)}], whole_image=True)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        photos = _photos(a.photos, a.n, tmp)
        spec = PipelineSpec(model=a.model, method=a.method, torch_threads=1)

        torch.set_num_threads(a.threads_seq)
        t0 = time.perf_counter()
        pipe = PipelineSpec(model=a.model, method=a.method, torch_threads=a.threads_seq).build()
        failed_seq = 0
        for p in photos:
            rec = InputRecord(path=p)
            try:
                process_photo(pipe, p, OutputTree(tmp / "seq"), job, rec)
            except Exception:  # noqa: BLE001 - counted, as the batch commands do
                failed_seq += 1
        t_seq = time.perf_counter() - t0

        t0 = time.perf_counter()
        record = run_distributed(photos, tmp / "dist", spec, job, n_workers=a.workers, resume=False)
        t_dist = time.perf_counter() - t0

        seq = {q.name: q.read_bytes() for q in (tmp / "seq" / "inversion").glob("*.png")}
        dist = {q.name: q.read_bytes() for q in (tmp / "dist" / "inversion").glob("*.png")}
        identical = bool(seq) and seq == dist
    print(json.dumps({
        "model": a.model, "method": a.method, "photos": len(photos), "edit": a.edit,
        "sequential": {"threads": a.threads_seq, "seconds": round(t_seq, 2), "failed": failed_seq,
                       "photos_per_min": round(60 * len(photos) / t_seq, 2)},
        "distributed": {"workers": a.workers, "threads_per_worker": 1, "seconds": round(t_dist, 2),
                        "failed": record.counts["failed"], "photos_per_min": round(60 * len(photos) / t_dist, 2),
                        "includes": "local cluster start-up and model load per worker"},
        "speedup": round(t_seq / t_dist, 3),
        "identical_outputs": identical,
        "identity_check_valid": a.threads_seq == 1,
        "cpu_count": os.cpu_count(),
    }, indent=2))
    return 0 if identical or a.threads_seq != 1 else 1


if __name__ == "__main__":
    sys.exit(main())
