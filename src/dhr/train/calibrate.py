"""Calibrates a model's domain-segmentation thresholds τ on training crops with synthetic occluders.

The reference thresholds (0.7 skin, 0.8 inner face, 0.6 other) were set for LPIPS-VGG error maps
of the FFHQ 1024 px model. A model with another perceptual metric and resolution produces error
scores on another scale, so the same numbers can mark nothing (or everything) out of domain. This
module measures where the scale lies: on N *training* crops (never the held-out ones the benchmark
uses), each with one seeded occluder from :func:`dhr.bench.occlusion.occlude` (ground-truth mask),
it runs DHR's coarse inversion and segmentation once, then re-thresholds the per-superpixel scores
with τ_c = s · τ_c(reference) for a grid of scales s (the three thresholds keep their ratios) and
reports, per s and per clean-up size ``min_region`` (see :class:`dhr.segmentation.domain.SegmentConfig`),
the IoU of the out-of-domain mask with the occluder, the false alarms (fraction of the pixels
outside the occluder marked out of domain) and the out-of-domain fraction on the same crops without
occluder. The rule: the setting with the highest mean IoU among those whose mean false alarms and
clean out-of-domain fraction are both at most ``max_false_alarm`` (2 %); if none qualifies, the one
with the fewest false alarms. The coarse inversion runs the same step budget as the benchmark at
``steps_scale`` (1 = the model's full budget, the benchmark's default), and the report records it.

Usage::

    python -m dhr.train.calibrate --model src/dhr/assets/models/faces-64 \\
        --data ../shared/datasets/utkface --n 60 --out calibration.json [--write]

``--write`` stores the calibrated thresholds and ``min_region`` in the model's ``model.json`` (``config.segment``),
so every pipeline and benchmark using the model starts from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from dhr.bench.inputs import detect_landmarks, load_bench_image
from dhr.bench.occlusion import occlude
from dhr.bench.protocol import scale_steps
from dhr.bench.scoring import false_alarm
from dhr.bench.scoring import iou as mask_iou
from dhr.embed.optimize import optimize_latent
from dhr.errors import ConfigError, DHRError
from dhr.faces.parsing import LandmarkParser
from dhr.io.image import uint8_to_tensor
from dhr.models.zoo import load_model
from dhr.segmentation.domain import SegmentConfig, segment
from dhr.train.data import is_validation

__all__ = ["MIN_REGIONS", "SCALES", "calibrate_thresholds", "write_thresholds"]

log = logging.getLogger(__name__)

#: Scales s of the reference thresholds tried by default.
SCALES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
#: Clean-up sizes (``SegmentConfig.min_region``) tried by default.
MIN_REGIONS = (0.0, 0.01, 0.02, 0.04)


def calibrate_thresholds(model_path: str | Path, data: str | Path, *, n: int = 60, seed: int = 1000,
                         scales: tuple[float, ...] = SCALES, min_regions: tuple[float, ...] = MIN_REGIONS,
                         val_fraction: float = 0.04, max_false_alarm: float = 0.02,
                         steps_scale: float = 1.0) -> dict:
    """Measures segmentation quality against occluder masks for each threshold scale and clean-up size.

    Args:
        model_path: Model folder (or bundled name).
        data: Folder of labelled UTKFace crops; only training crops are used (not
            :func:`dhr.train.data.is_validation` with ``val_fraction``).
        n: Number of crops (the first n training crops in name order).
        seed: Occluder i uses ``seed + i``.
        scales: Scales s of the reference thresholds (0.7 skin, 0.8 inner face, 0.6 other).
        min_regions: Clean-up sizes tried (fractions of the image; 0 = none).
        val_fraction: The held-out fraction of the model's training (to skip those crops).
        max_false_alarm: Largest admissible mean false-alarm rate and clean out-of-domain fraction.
        steps_scale: Factor on the model's coarse-inversion steps (use the benchmark's).

    Returns:
        ``{"grid": [{"scale", "min_region", "iou", "false_alarm", "clean_ood_fraction",
        "occluded_ood_fraction"}], "scales", "iou", "clean_ood_fraction", "occluded_ood_fraction"
        (the ``min_region = 0`` row, per scale), "best_scale", "best_min_region", "best", "rule",
        "by_fill", "thresholds", "coarse_steps", "n", ...}``.
    """
    model = load_model(model_path)
    if model.perceptual is None:
        raise ConfigError(f"{model_path}: calibration uses the model's own perceptual metric; this model has none")
    base = scale_steps(model.recommended_config(), steps_scale)
    reference = SegmentConfig()
    ref = dataclasses.replace(base.segment, theta=None, min_region=0.0)
    G, R = model.generator, model.resolution
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and not is_validation(p.name, val_fraction))[:n]
    if not files:
        raise ConfigError(f"no training crops in {data}")
    items = [load_bench_image(f, R, strict=False) for f in files]
    settings = [(s, mr) for mr in min_regions for s in scales]
    per_image = []
    for i, it in enumerate(items):
        try:
            detect_landmarks(it)  # no face found: landmarks stay None, segmented without a parser
        except (DHRError, ImportError) as e:  # no dlib or its model file: the same, as the pipeline does
            log.info("%s: no landmarks (%s)", it.name, e)
        occ = occlude(it.pixels, seed + i, sources=[o.pixels for j, o in enumerate(items) if j != i])
        gt = torch.from_numpy(occ.mask).float()[None]
        row = {"image": it.name, "occluder": occ.shape, "fill": occ.fill}
        for kind, pixels in (("clean", it.pixels), ("occluded", occ.image)):
            target = uint8_to_tensor(pixels)[None]
            parsing = None if it.landmarks is None else LandmarkParser().parse(target[0], it.landmarks)
            coarse, maps = optimize_latent(G, target, model.perceptual, base.coarse)
            maps0 = list(maps[0])
            dom0 = segment(target[0], coarse[0].image, maps0, parsing=parsing, config=ref)
            fracs, ious, alarms = [], [], []
            for s, mr in settings:
                cfg = dataclasses.replace(ref, theta_skin=reference.theta_skin * s,
                                          theta_inner=reference.theta_inner * s,
                                          theta_other=reference.theta_other * s, min_region=mr)
                dom = segment(target[0], coarse[0].image, maps0, parsing=parsing, config=cfg, labels=dom0.superpixels)
                ood = 1 - dom.mask
                fracs.append(float(ood.mean()))
                ious.append(mask_iou(ood, gt))
                alarms.append(false_alarm(ood, gt))
            row[f"{kind}_ood_fraction"] = fracs
            if kind == "occluded":
                row["iou"], row["false_alarm"] = ious, alarms
        per_image.append(row)
        log.info("calibrate: %d/%d %s", i + 1, len(items), it.name)

    def mean(key: str) -> list[float]:
        return [float(np.nanmean([r[key][k] for r in per_image])) for k in range(len(settings))]

    iou, fa, clean, occl = mean("iou"), mean("false_alarm"), mean("clean_ood_fraction"), mean("occluded_ood_fraction")
    grid = [{"scale": s, "min_region": mr, "iou": iou[k], "false_alarm": fa[k], "clean_ood_fraction": clean[k],
             "occluded_ood_fraction": occl[k]} for k, (s, mr) in enumerate(settings)]
    ok = [k for k in range(len(settings)) if fa[k] <= max_false_alarm and clean[k] <= max_false_alarm]
    if ok:
        best = max(ok, key=lambda k: iou[k])
        rule = (f"highest mean IoU among settings with mean false alarms and clean out-of-domain fraction "
                f"<= {max_false_alarm:.0%}")
    else:
        best = min(range(len(settings)), key=lambda k: fa[k])
        rule = f"no setting keeps false alarms <= {max_false_alarm:.0%}: the one with the fewest"
    s, mr = settings[best]
    by_fill: dict[str, list[float]] = {}
    for r in per_image:
        by_fill.setdefault(r["fill"], []).append(r["iou"][best])
    zero = [k for k, (_, m) in enumerate(settings) if m == 0.0] or list(range(len(scales)))
    reference_index = next((k for k in zero if settings[k][0] == 1.0), None)
    return {
        "model": str(model_path), "data": str(data), "n": len(items), "seed": seed,
        "metric": "IoU of the out-of-domain mask (1 - m) with the occluder mask; false alarms = fraction of the "
                  "pixels outside the occluder marked out of domain; clean = the same crops without occluder",
        "perceptual": type(model.perceptual).__name__,
        "coarse_steps": base.coarse.steps, "steps_scale": steps_scale,
        "grid": grid, "rule": rule,
        "scales": [settings[k][0] for k in zero], "iou": [iou[k] for k in zero],
        "false_alarm": [fa[k] for k in zero],
        "clean_ood_fraction": [clean[k] for k in zero], "occluded_ood_fraction": [occl[k] for k in zero],
        "best_scale": s, "best_min_region": mr,
        "best": {"iou": iou[best], "false_alarm": fa[best], "clean_ood_fraction": clean[best],
                 "occluded_ood_fraction": occl[best]},
        "by_fill": {f: {"n": len(v), "iou": float(np.nanmean(v))} for f, v in sorted(by_fill.items())},
        "reference": None if reference_index is None else
        {"iou": iou[reference_index], "false_alarm": fa[reference_index],
         "clean_ood_fraction": clean[reference_index]},
        "thresholds": {"theta_skin": round(reference.theta_skin * s, 4),
                       "theta_inner": round(reference.theta_inner * s, 4),
                       "theta_other": round(reference.theta_other * s, 4)},
        "images": per_image,
    }


def write_thresholds(model_folder: str | Path, thresholds: dict[str, float], *, calibration: dict | None = None) -> Path:
    """Stores ``thresholds`` (and ``min_region``) as ``config.segment`` in the folder's ``model.json``.

    Args:
        model_folder: The model folder.
        thresholds: ``config.segment`` entries to set.
        calibration: What they were calibrated with (``coarse_steps``, ``n``, ``seed``, ``rule``...), kept
            as ``training.calibration`` so the benchmark can say whether it runs the same budget.
    """
    path = Path(model_folder) / "model.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    config = dict(manifest.get("config") or {})
    config["segment"] = {**dict(config.get("segment") or {}), **thresholds}
    manifest["config"] = config
    if calibration is not None:
        manifest["training"] = {**dict(manifest.get("training") or {}), "calibration": calibration}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="folder of UTKFace training crops")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    p.add_argument("--write", action="store_true", help="store the calibrated thresholds in model.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="factor on the coarse-inversion steps; use the benchmark's (default 1, the full budget)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    report = calibrate_thresholds(a.model, a.data, n=a.n, seed=a.seed, steps_scale=a.steps_scale)
    if a.out is not None:
        a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {k: report[k] for k in ("n", "coarse_steps", "rule", "best_scale", "best_min_region", "best",
                                      "by_fill", "reference", "thresholds")}
    print(json.dumps(summary, indent=2))
    if a.write:
        if not math.isfinite(report["best"]["iou"]):
            raise SystemExit("no finite IoU; thresholds not written")
        info = {"coarse_steps": report["coarse_steps"], "n": report["n"], "seed": report["seed"], "rule": report["rule"],
                "iou": round(report["best"]["iou"], 4), "false_alarm": round(report["best"]["false_alarm"], 4),
                "clean_ood_fraction": round(report["best"]["clean_ood_fraction"], 4)}
        path = write_thresholds(a.model, {**report["thresholds"], "min_region": report["best_min_region"]},
                                calibration=info)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
