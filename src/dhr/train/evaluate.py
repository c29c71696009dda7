"""Figures of the model card, each produced by this one command:

``python -m dhr.train.evaluate --model src/dhr/assets/models/faces-64 --data DIR --lpips-dir DIR --out FILE``

- sample quality: KID and FID between ``--n`` generated images and the held-out real crops, on
  SqueezeNet-1.1 ImageNet features (NOT Inception features; see :mod:`dhr.metrics.kid`);
- encoder reconstruction on the held-out crops: MSE (in [-1, 1]) and LPIPS-squeeze;
- classifier accuracy on the held-out crops;
- edit effect of each direction: mean classifier change per unit strength on generated samples;
- a sample grid and an edit grid (PNG).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(model_dir: Path, data: Path, lpips_dir: Path, *, n: int = 2000, seed: int = 0,
                   n_face: int = 500, grid_dir: Path | None = None) -> dict:
    from PIL import Image

    from dhr.editing import apply_edits
    from dhr.metrics.lpips import LPIPS
    from dhr.models.zoo import load_model
    from dhr.train.aux import evaluate_classifier
    from dhr.train.data import prepare_dataset
    from dhr.train.export import direction_effects
    from dhr.train.gan import _grid, _to_tensor
    from dhr.train.quality import generate, sample_quality

    model = load_model(model_dir)
    G, E = model.generator, model.encoder
    R = G.resolution
    _, val, _ = prepare_dataset(data, R, Path("/tmp") / f"dhr_eval_data_{R}.npz")
    lp = LPIPS("squeeze", backbone=lpips_dir / "squeezenet1_1_features.safetensors", linear=lpips_dir / "v0.1" / "squeeze.pth")
    real = _to_tensor(val.images)
    report: dict = {"model": str(model_dir), "held_out_real": len(val),
                    "feature_network": "SqueezeNet-1.1 ImageNet (pooled fire12, 512-d) -- not Inception-v3",
                    **sample_quality(G, real, lp.features, n=n, seed=seed, n_face=n_face)}
    fakes = generate(G, 200, seed=seed)
    rec = torch.cat([G(E(x, G.w_avg)) for x in real.split(100)])
    report["encoder_mse"] = float((rec - real).square().mean())
    report["encoder_lpips_squeeze"] = float(torch.cat([lp(a, b) for a, b in zip(rec.split(100), real.split(100))]).mean())
    if model.classifier is not None:
        report["classifier"] = evaluate_classifier(model.classifier, val)
    if model.classifier is not None and model.directions is not None:
        report["direction_effects"] = direction_effects(G, model.classifier, model.directions)
    if grid_dir is not None:
        grid_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_grid(fakes[0][:32], 8)).save(grid_dir / "samples.png")
        pairs = torch.stack([real[:16], rec[:16]], 1).reshape(-1, 3, R, R)
        Image.fromarray(_grid(pairs, 8)).save(grid_dir / "reconstructions.png")
        if model.directions is not None:
            ws = E(real[:4], G.w_avg)
            rows = []
            names = ([x for x in ("age", "gender", "smile", "yaw", "eyes_open") if x in model.directions]
                     or model.directions.names()[:2])
            for name in names:
                d = model.directions[name]
                for s in (-3.0, -1.5, 0.0, 1.5, 3.0):
                    rows.append(G(apply_edits(ws, [(d, s)])))
            grid = torch.stack(rows, 0)  # (edits*5, 4, 3, R, R)
            grid = grid.reshape(len(names), 5, 4, 3, R, R).permute(0, 2, 1, 3, 4, 5).reshape(-1, 3, R, R)
            Image.fromarray(_grid(grid, 5)).save(grid_dir / "edits.png")
            report["edit_grid"] = {"rows": [f"{nm} face {i}" for nm in names for i in range(4)],
                                   "strengths": [-3.0, -1.5, 0.0, 1.5, 3.0]}
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="UTKFace folder (the held-out split is recomputed)")
    p.add_argument("--lpips-dir", type=Path, required=True, help="folder with squeezenet1_1_features.safetensors and v0.1/")
    p.add_argument("--out", type=Path, required=True, help="JSON report path")
    p.add_argument("--grids", type=Path, default=None, help="folder for sample/edit grid PNGs")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-face", type=int, default=500, help="samples scored by dlib (face_rate, kid_face); 0 skips")
    a = p.parse_args(argv)
    rep = evaluate_model(a.model, a.data, a.lpips_dir, n=a.n, n_face=a.n_face, grid_dir=a.grids)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rep, indent=2) + "\n")
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
