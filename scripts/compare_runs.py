"""Paired comparison of methods from two benchmark runs on the same images and occluders.

    python scripts/compare_runs.py A/results.json B/results.json --reference "dhr[feature-res=16]" \
        [--metrics mse,lpips,edit.age.attr_per_unit] [--json out.json]
    python scripts/compare_runs.py fp32/results.json bf16/results.json --suffix-b "[bf16]" --reference dhr

``--suffix-b`` renames run B's methods (``dhr`` -> ``dhr[bf16]``): the same method run with two
configs (``--set precision=bf16``) side by side.

Both runs must have scored the same images with the same occluders (same data, --n, --spread,
--seed, --occlusion); the script checks that, puts every method of both runs side by side per
image (a label present in both must agree within 1e-6 on every metric, i.e. the runs are
deterministic), and prints the benchmark's paired verdicts (bootstrap 95 % interval, wins) of
``--reference`` against every other method.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dhr.bench.report import verdicts


def _renamed(run: dict, suffix: str) -> dict:
    """``run`` with ``suffix`` appended to every method label."""
    if not suffix:
        return run
    images = [{**r, "methods": {label + suffix: e for label, e in r.get("methods", {}).items()}}
              for r in run["images"]]
    bench = {**run["benchmark"], "methods": [m + suffix for m in run["benchmark"]["methods"]]}
    return {**run, "images": images, "benchmark": bench}


def merge(a: dict, b: dict, suffix_b: str = "") -> tuple[list[dict], list[str]]:
    """Per-image records with the methods of both runs; raises SystemExit when they differ."""
    b = _renamed(b, suffix_b)
    ia = {r["image"]: r for r in a["images"]}
    ib = {r["image"]: r for r in b["images"]}
    if set(ia) != set(ib):
        raise SystemExit(f"the runs scored different images: {sorted(set(ia) ^ set(ib))}")
    images = []
    for name in sorted(ia):
        ra, rb = ia[name], ib[name]
        if ra.get("occluder") != rb.get("occluder"):
            raise SystemExit(f"{name}: the runs drew different occluders")
        methods = dict(ra.get("methods", {}))
        for label, entry in rb.get("methods", {}).items():
            if label in methods:
                ma, mb = methods[label].get("metrics", {}), entry.get("metrics", {})
                bad = [k for k in set(ma) & set(mb) if ma[k] is not None and mb[k] is not None
                       and not math.isclose(ma[k], mb[k], rel_tol=1e-6, abs_tol=1e-6)]
                if bad:
                    raise SystemExit(f"{name}: {label} differs between the runs on {sorted(bad)}")
            else:
                methods[label] = entry
        images.append({**ra, "methods": methods})
    labels = list(dict.fromkeys(a["benchmark"]["methods"] + b["benchmark"]["methods"]))
    return images, labels


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--reference", required=True, help="method label compared with every other")
    ap.add_argument("--metrics", default=None, help="comma list of metric keys (default: all)")
    ap.add_argument("--suffix-b", default="", help="appended to run B's method labels, e.g. '[bf16]'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the verdicts here")
    args = ap.parse_args(argv)
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (args.a, args.b))
    images, labels = merge(a, b, args.suffix_b)
    if args.reference not in labels:
        raise SystemExit(f"--reference {args.reference!r} is not among {labels}")
    out = verdicts(images, labels, reference=args.reference, seed=args.seed)
    if args.metrics:
        keep = set(args.metrics.split(","))
        out = [v for v in out if v["metric"] in keep]
    for v in out:
        print(v["text"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
