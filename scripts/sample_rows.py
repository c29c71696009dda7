"""One row of 16 random samples (seed 0, truncation 1) per generator: milestones or model folders.

    python scripts/sample_rows.py OUT.png runs/cmp-projected/milestones/g_ema_000010kimg.pt \
        runs/cmp-residual/milestones/g_ema_000008kimg.pt src/dhr/assets/models/faces-64

Each argument is a training milestone (``milestones/g_ema_*.pt`` written with ``--milestone-kimg``)
or an exported model folder; every row uses the same latent codes. Images are enlarged 1.5x.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image

from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.models.zoo import load_model
from dhr.train.gan import _grid


def load_generator(path: Path) -> Generator:
    if path.is_dir():
        return load_model(path).generator.float().eval()
    st = torch.load(path, map_location="cpu", weights_only=True)
    G = Generator(GeneratorConfig(**json.loads(st["generator_config"])))
    G.load_state_dict(st["G_ema"])
    return G.eval()


@torch.no_grad()
def main(out: str, *sources: str, n: int = 16) -> None:
    rows = []
    for src in sources:
        G = load_generator(Path(src))
        z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(0))
        rows.append(G(G.sample_ws(z), noise_mode="const"))
    grid = Image.fromarray(_grid(torch.cat(rows), n))
    grid.resize((grid.width * 3 // 2, grid.height * 3 // 2), Image.Resampling.NEAREST).save(out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], *sys.argv[2:])
