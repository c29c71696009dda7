"""Calibrates a model's domain-segmentation thresholds τ on training crops with synthetic occluders.

The reference thresholds (0.7 skin, 0.8 inner face, 0.6 other) were set for LPIPS-VGG error maps
of the FFHQ 1024 px model. A model with another perceptual metric and resolution produces error
scores on another scale, so the same numbers can mark nothing (or everything) out of domain. This
module measures where the scale lies: on N *training* crops (never the held-out ones the benchmark
uses), each with one seeded occluder from :func:`dhr.bench.occlusion.occlude` (ground-truth mask),
it runs DHR's coarse inversion and segmentation once, then re-thresholds the per-superpixel scores
with τ_c = s · τ_c(reference) for a grid of scales s (the three thresholds keep their ratios) and
reports, per s, the IoU of the out-of-domain mask with the occluder and the out-of-domain fraction
on the same crops without occluder (false alarms). The chosen s maximises the mean IoU.

Usage::

    python -m dhr.train.calibrate --model src/dhr/assets/models/faces-64 \\
        --data ../shared/datasets/utkface --n 60 --out calibration.json [--write]

``--write`` stores the calibrated thresholds in the model's ``model.json`` (``config.segment``),
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

from dhr.errors import ConfigError

__all__ = ["SCALES", "calibrate_thresholds"]

log = logging.getLogger(__name__)

#: Scales s of the reference thresholds tried by default.
SCALES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)


def calibrate_thresholds(model_path: str | Path, data: str | Path, *, n: int = 60, seed: int = 1000,
                         scales: tuple[float, ...] = SCALES, val_fraction: float = 0.04) -> dict:
    """Measures segmentation quality against occluder masks for each threshold scale.

    Args:
        model_path: Model folder (or bundled name).
        data: Folder of labelled UTKFace crops; only training crops are used (not
            :func:`dhr.train.data.is_validation` with ``val_fraction``).
        n: Number of crops (the first n training crops in name order).
        seed: Occluder i uses ``seed + i``.
        scales: Scales s of the reference thresholds.
        val_fraction: The held-out fraction of the model's training (to skip those crops).

    Returns:
        ``{"scales": [...], "iou": [...], "clean_ood_fraction": [...], "occluded_ood_fraction": [...],
        "best_scale", "thresholds": {"theta_skin", "theta_inner", "theta_other"}, "n", ...}``.
    """
    from dhr.bench.occlusion import occlude
    from dhr.bench.run import _detect_landmarks, _iou, _load_item
    from dhr.embed.optimize import optimize_latent
    from dhr.faces.parsing import LandmarkParser
    from dhr.io.image import uint8_to_tensor
    from dhr.models.zoo import load_model
    from dhr.segmentation.domain import segment
    from dhr.train.data import is_validation

    model = load_model(model_path)
    if model.perceptual is None:
        raise ConfigError(f"{model_path}: calibration uses the model's own perceptual metric; this model has none")
    base = model.recommended_config()
    ref = dataclasses.replace(base.segment, theta=None)
    G, R = model.generator, model.resolution
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and not is_validation(p.name, val_fraction))[:n]
    if not files:
        raise ConfigError(f"no training crops in {data}")
    items = [_load_item(f, R, strict=False) for f in files]
    per_image = []
    for i, it in enumerate(items):
        try:
            _detect_landmarks(it)
        except Exception as e:  # noqa: BLE001 - no face: segment without a parser, as the pipeline does
            log.info("%s: no landmarks (%s)", it.name, e)
        occ = occlude(it.pixels, seed + i, sources=[o.pixels for j, o in enumerate(items) if j != i])
        gt = torch.from_numpy(occ.mask).float()[None]
        row = {"image": it.name, "occluder": occ.shape}
        for kind, pixels in (("clean", it.pixels), ("occluded", occ.image)):
            target = uint8_to_tensor(pixels)[None]
            parsing = None if it.landmarks is None else LandmarkParser().parse(target[0], it.landmarks)
            coarse, maps = optimize_latent(G, target, model.perceptual, base.coarse)
            maps0 = list(maps[0])
            dom0 = segment(target[0], coarse[0].image, maps0, parsing=parsing, config=ref)
            fracs, ious = [], []
            for s in scales:
                cfg = dataclasses.replace(ref, theta_skin=ref.theta_skin * s, theta_inner=ref.theta_inner * s,
                                          theta_other=ref.theta_other * s)
                dom = segment(target[0], coarse[0].image, maps0, parsing=parsing, config=cfg, labels=dom0.superpixels)
                ood = 1 - dom.mask
                fracs.append(float(ood.mean()))
                ious.append(_iou(ood, gt))
            row[f"{kind}_ood_fraction"] = fracs
            if kind == "occluded":
                row["iou"] = ious
        per_image.append(row)
        log.info("calibrate: %d/%d %s", i + 1, len(items), it.name)

    def mean(key: str) -> list[float]:
        return [float(np.mean([r[key][k] for r in per_image])) for k in range(len(scales))]

    iou, clean, occl = mean("iou"), mean("clean_ood_fraction"), mean("occluded_ood_fraction")
    best = int(np.argmax(iou))
    s = scales[best]
    reference_index = scales.index(1.0) if 1.0 in scales else None
    return {
        "model": str(model_path), "data": str(data), "n": len(items), "seed": seed,
        "metric": "IoU of the out-of-domain mask (1 - m) with the occluder mask; clean = the same crops "
                  "without occluder (out-of-domain fraction = false alarms)",
        "perceptual": type(model.perceptual).__name__,
        "scales": list(scales), "iou": iou, "clean_ood_fraction": clean, "occluded_ood_fraction": occl,
        "best_scale": s,
        "best": {"iou": iou[best], "clean_ood_fraction": clean[best], "occluded_ood_fraction": occl[best]},
        "reference": None if reference_index is None else
        {"iou": iou[reference_index], "clean_ood_fraction": clean[reference_index]},
        "thresholds": {"theta_skin": round(ref.theta_skin * s, 4), "theta_inner": round(ref.theta_inner * s, 4),
                       "theta_other": round(ref.theta_other * s, 4)},
        "images": per_image,
    }


def write_thresholds(model_folder: str | Path, thresholds: dict[str, float]) -> Path:
    """Stores ``thresholds`` as ``config.segment`` in the folder's ``model.json``."""
    path = Path(model_folder) / "model.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    config = dict(manifest.get("config") or {})
    config["segment"] = {**dict(config.get("segment") or {}), **thresholds}
    manifest["config"] = config
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
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    report = calibrate_thresholds(a.model, a.data, n=a.n, seed=a.seed)
    if a.out is not None:
        a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {k: report[k] for k in ("n", "scales", "iou", "clean_ood_fraction", "best_scale", "best",
                                      "reference", "thresholds")}
    print(json.dumps(summary, indent=2))
    if a.write:
        if not math.isfinite(report["best"]["iou"]):
            raise SystemExit("no finite IoU; thresholds not written")
        print(f"wrote {write_thresholds(a.model, report['thresholds'])}")


if __name__ == "__main__":
    main()
