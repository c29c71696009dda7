"""Full-size path check: a random config-f 1024 generator and e4e encoder, converted and run on a photo.

1. builds a random-weight config-f 1024 generator (rosinality key layout, through the test
   suite's independent native -> rosinality mapping) and an e4e encoder (IR-SE-50, 18 styles,
   official key layout) and saves them as one official-layout e4e ``.pt`` (never committed: a
   temporary folder unless ``--work`` is given);
2. ``dhr convert`` turns it into a model folder (with one random edit direction ``-d age.pt``);
3. ``dhr run --model`` runs the whole pipeline on the astronaut photo with tiny budgets on the CPU,
   writing every output (aligned, masks, inversion, edits, pasted, bundle, sheet, run.json).

Each command runs in its own process; the script prints its wall time and peak resident memory
(``ru_maxrss``) and checks the outputs. The converted model has no perceptual network: the
refinement uses LPIPS-squeeze and the coarse inversion the same network (``coarse_perceptual=same``)
because LPIPS-Alex/VGG weights are not available offline here; pass ``--perceptual alex`` when they are.

Usage: python scripts/fullsize_check.py [--threads 2] [--work DIR] [--perceptual squeeze]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

_RUNNER = """
import resource, sys
from dhr.cli import main
sys.argv = ["dhr"] + sys.argv[1:]
try:
    main()
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
"""


def build_checkpoint(path: Path) -> None:
    """Writes a random config-f 1024 e4e checkpoint in the official layout to ``path``."""
    import torch

    sys.path.insert(0, str(REPO))  # the test suite's independent key mapping
    from dhr.models.encoders import Encoder4Editing
    from dhr.models.stylegan2 import Generator, GeneratorConfig
    from tests.models.test_convert import native_to_rosinality

    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=1024, style_dim=512, n_mapping=8, channel_multiplier=2)
    G = Generator(cfg).eval()
    with torch.no_grad():
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.05)
        w_avg = G.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    enc = Encoder4Editing(G.num_ws, num_layers=50, style_dim=512, input_size=256).eval()
    with torch.no_grad():  # random heads: keep the codes near the average latent
        for style in enc.styles:
            style.linear.weight.mul_(0.01)
    state = {f"decoder.{k}": v for k, v in native_to_rosinality(G.state_dict(), cfg).items()}
    state.update({f"encoder.{k}": v for k, v in enc.state_dict().items()})
    opts = {"encoder_type": "Encoder4Editing", "output_size": 1024, "start_from_latent_avg": True,
            "n_styles": G.num_ws}
    torch.save({"state_dict": state, "latent_avg": w_avg[None].repeat(G.num_ws, 1), "opts": opts}, path)
    torch.save(torch.randn(512, generator=torch.Generator().manual_seed(1)), path.parent / "age.pt")


def dhr(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Runs ``dhr ARGS`` in a fresh process; returns (seconds, peak RSS in GB, output tail)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    peak = next((int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_RSS_KB")), 0)
    if res.returncode != 0:
        raise SystemExit(f"dhr {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return seconds, peak / 1024 ** 2, res.stdout[-500:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--perceptual", default="squeeze", help="LPIPS backbone of the refinement")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dhr-fullsize-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DHR_OFFLINE="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if (SHARED / "weights").is_dir():
        env["DHR_WEIGHTS_PATH"] = str(SHARED / "weights")

    t0 = time.perf_counter()
    ckpt = work / "e4e_random_1024.pt"
    build_checkpoint(ckpt)
    print(f"build random checkpoint: {time.perf_counter() - t0:.1f} s, {ckpt.stat().st_size / 1e6:.0f} MB")

    from dhr.cli.example import example_photo

    photo = work / "astronaut.png"
    example_photo("astronaut").save(photo)
    rows = []
    s, gb, _ = dhr(["convert", str(ckpt), str(work / "model"), "-d", str(work / "age.pt")], env)
    rows.append(("dhr convert", s, gb))
    out = work / "out"
    budget = ["--set", "optim.steps=2", "--set", "coarse.steps=2", "--set", "coarse.n_mean_samples=512",
              "--set", "refine.steps=2", "--set", "refine.weight_steps=1", "--set", "segment.n_segments=50",
              "--set", "coarse_perceptual=same"]
    s, gb, tail = dhr(["run", str(photo), "--model", str(work / "model"), "--device", "cpu", "--perceptual",
                       args.perceptual, "--edit", "age=+2", *budget, "-o", str(out), "--quiet"], env)
    rows.append(("dhr run --model (1 face, DHR, 2+2 steps, one edit)", s, gb))
    record = json.loads((out / "run.json").read_text())
    missing = [d for d in ("aligned", "masks", "inversion", "edits", "pasted", "bundles", "sheets")
               if not any((out / d).rglob("*.*"))]
    status = record.get("counts", record.get("summary"))
    print(f"\nthreads {args.threads}, perceptual {args.perceptual}, work folder {work}")
    print(f"{'step':<55} {'seconds':>8} {'peak RSS GB':>12}")
    for name, s, gb in rows:
        print(f"{name:<55} {s:>8.1f} {gb:>12.2f}")
    print(f"run.json counts: {status}; output folders missing: {missing or 'none'}")
    if missing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
