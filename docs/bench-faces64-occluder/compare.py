"""Paired before/after comparison of DHR's occluder detection from two `dhr bench --occlusion` results.json."""
import json, sys
from dhr.bench.stats import paired_bootstrap, bootstrap_mean
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ra = {r["image"]: r for r in a["images"]}; rb = {r["image"]: r for r in b["images"]}
names = [n for n in ra if n in rb and "reference_mask" in ra[n] and "reference_mask" in rb[n]]
out = {"n": len(names)}
for key, d in (("iou_ood", "higher"), ("ood_false_alarm", "lower"), ("clean_ood_fraction", "lower")):
    x = [rb[n]["reference_mask"][key] for n in names]; y = [ra[n]["reference_mask"][key] for n in names]
    c = paired_bootstrap(x, y, direction=d)
    out[key] = {"before": bootstrap_mean(y), "after": bootstrap_mean(x), "after_minus_before": [c.diff, c.ci_low, c.ci_high],
                "wins_after_before_ties": [c.wins_a, c.wins_b, c.ties]}
fills = {}
for n in names:
    f = ra[n]["occluder"]["fill"]; fills.setdefault(f, [[], []])
    fills[f][0].append(ra[n]["reference_mask"]["iou_ood"]); fills[f][1].append(rb[n]["reference_mask"]["iou_ood"])
out["iou_by_fill"] = {f: {"n": len(v[0]), "before": sum(v[0]) / len(v[0]), "after": sum(v[1]) / len(v[1])} for f, v in sorted(fills.items())}
shapes = {}
for n in names:
    s = ra[n]["occluder"]["shape"]; shapes.setdefault(s, [[], []])
    shapes[s][0].append(ra[n]["reference_mask"]["iou_ood"]); shapes[s][1].append(rb[n]["reference_mask"]["iou_ood"])
out["iou_by_shape"] = {f: {"n": len(v[0]), "before": sum(v[0]) / len(v[0]), "after": sum(v[1]) / len(v[1])} for f, v in sorted(shapes.items())}
print(json.dumps(out, indent=1))
