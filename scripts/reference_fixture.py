"""Parity run on the 64 px rosinality fixture: DHR's reference preset from the mean latent on three
aligned faces of ../shared, printing each face's in-domain share and error (docs/engine.md, "Parity runs").

LPIPS-VGG/Alex weights are used when they resolve (dhr weights); otherwise LPIPS-squeeze from
../shared/weights/lpips stands in for both, and the script says so.

Usage: python scripts/reference_fixture.py [--refine-steps 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dhr.errors import DHRError
from dhr.io.image import load_image, uint8_to_tensor
from dhr.metrics.lpips import LPIPS
from dhr.models.checkpoint import load_generator
from dhr.refinement.hybrid import RefineConfig
from dhr.reference import reference_config, run_reference

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def lpips(net: str) -> tuple[LPIPS, str]:
    try:
        return LPIPS.from_registry(net, download=False), f"lpips-{net}"
    except DHRError:
        w = SHARED / "weights" / "lpips"
        return LPIPS("squeeze", backbone=w / "squeezenet1_1_features.safetensors",
                     linear=w / "v0.1" / "squeeze.pth"), f"lpips-squeeze (standing in for {net})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refine-steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    G = load_generator(SHARED / "fixtures" / "stylegan2_rosinality_64_cm1" / "g_ema.pt").eval()
    files = sorted((SHARED / "datasets" / "aligned").glob("hyperstyle-*.jpg"))[:3]
    x = torch.stack([F.interpolate(uint8_to_tensor(load_image(f).pixels)[None], size=(64, 64), mode="bilinear",
                                   antialias=True, align_corners=False)[0] for f in files])
    (coarse, cname), (refine, rname) = lpips("vgg"), lpips("alex")
    steps = args.refine_steps
    cfg = reference_config(refine=RefineConfig(steps=steps, weight_steps=steps // 2, delta_format="fp32",
                                               feature_format="fp32"))
    t0 = time.perf_counter()
    runs = run_reference(G, x, start="mean", perceptual=refine, coarse_perceptual=coarse, config=cfg)
    print(f"coarse {cname}, refine {rname}, coarse steps {cfg.coarse.steps}, refine steps {steps}: "
          f"{time.perf_counter() - t0:.0f} s")
    for f, r in zip(files, runs):
        finite = r.image is None or bool(torch.isfinite(r.image).all())
        print(f"{f.name}: in-domain {r.in_domain_fraction:.2%}, image finite {finite}, error: {r.error}")


if __name__ == "__main__":
    main()
