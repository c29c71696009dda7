"""Paired DHR-setting vs PTI comparisons on a sweep's training crops (per-setting results.json of
``python -m dhr.bench.sweep``): MSE, in-domain MSE, LPIPS, |θ*-θ| and |attribute change per unit|,
each with its 95 % paired bootstrap interval (dhr.bench.stats.paired_bootstrap, seed 0).

Usage: ``PYTHONPATH=src python3 scripts/sweep_paired.py docs/sweep-faces64-v2/runs base f16-w200-150-5e-4``
"""
import json, sys
from pathlib import Path
from dhr.bench.stats import paired_bootstrap
root = Path(sys.argv[1])
b = json.loads((root / "baselines/results.json").read_text())
def vals(r, m, k):
    out = {}
    for im in r["images"]:
        rec = im["methods"].get(m) or {}
        v = {**rec.get("metrics", {}), **rec.get("edits", {})}.get(k)
        if v is not None: out[im["image"]] = v
    return out
for name in sys.argv[2:]:
    r = json.loads((root / name / "results.json").read_text())
    for k, d in [("mse", "lower"), ("in.mse", "lower"), ("lpips", "lower"), ("delta_norm", "lower"),
                 ("edit.age.attr_per_unit", "abs_higher"), ("edit.gender.attr_per_unit", "abs_higher")]:
        a, p = vals(r, "dhr", k), vals(b, "pti", k)
        ks = sorted(set(a) & set(p))
        c = paired_bootstrap([a[i] for i in ks], [p[i] for i in ks], direction=d)
        print(f"{name:20s} {k:28s} dhr {c.mean_a:.4f} pti {c.mean_b:.4f} diff {c.diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] ratio {c.ratio:.2f} [{c.ratio_low:.2f}, {c.ratio_high:.2f}] wins {c.wins_a}:{c.wins_b} n={len(ks)}")
