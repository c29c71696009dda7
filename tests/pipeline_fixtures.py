"""A tiny model folder (32 px, random weights) and tiny configs for the pipeline, CLI and web tests.

Import the helpers from test modules; nothing here runs at import time except definitions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / ".." / "shared" / "datasets" / "photos"

# Tiny step counts for every stage: the numbers are small enough for a test, not for quality.
TINY_CONFIG = {
    "method": "dhr",
    "optim": {"steps": 2, "init": "mean", "n_mean_samples": 64, "loss_resolution": 32},
    "coarse": {"steps": 2, "n_mean_samples": 64, "loss_resolution": 32},
    "segment": {"n_segments": 16},
    "refine": {"steps": 2, "weight_steps": 1},
    "pti": {"steps": 2},
}

TINY_TOML = """\
method = "dhr"

[optim]
steps = 2
init = "mean"
n_mean_samples = 64
loss_resolution = 32

[coarse]
steps = 2
n_mean_samples = 64
loss_resolution = 32

[segment]
n_segments = 16

[refine]
steps = 2
weight_steps = 1

[pti]
steps = 2
"""


def make_tiny_model(folder: Path, *, seed: int = 0, directions: tuple[str, ...] = ("age", "smile")) -> Path:
    """Writes a complete 32 px model folder (generator, encoder, perceptual, classifier, directions).

    Returns:
        The folder (loadable with ``dhr.models.zoo.load_model(folder)``).
    """
    from dhr.editing import Direction, DirectionSet
    from dhr.models.checkpoint import save_pretrained
    from dhr.models.small_encoder import SmallEncoder, SmallEncoderConfig
    from dhr.models.small_nets import (
        AttributeClassifier,
        ClassifierConfig,
        PerceptualConfig,
        TinyPerceptual,
    )
    from dhr.models.stylegan2 import Generator, GeneratorConfig
    from dhr.models.zoo import MODEL_JSON, register_small_components

    register_small_components()
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    G.w_avg.copy_(G.mean_latent(256, generator=torch.Generator().manual_seed(seed)))
    E = SmallEncoder(SmallEncoderConfig(resolution=32, num_ws=G.num_ws, style_dim=32, channels=8, channel_max=32))
    P = TinyPerceptual(PerceptualConfig((8, 8, 8)))
    C = AttributeClassifier(ClassifierConfig(resolution=32, channels=(8, 8)))
    folder = Path(folder)
    for name, module in (("generator", G), ("encoder", E), ("perceptual", P), ("classifier", C)):
        save_pretrained(module, folder / name)
    gen = torch.Generator().manual_seed(seed + 1)
    dirs = [Direction(n, torch.randn(32, generator=gen), source="test") for n in directions]
    DirectionSet(dirs).save(folder / "directions")
    manifest = {
        "name": "tiny-test",
        "description": "32 px random model for tests",
        "resolution": 32,
        "components": {"generator": "generator", "encoder": "encoder", "perceptual": "perceptual",
                       "classifier": "classifier", "directions": "directions"},
        "parser": "landmarks",
        "training": {"kimg": 0, "steps": 0},
        "licence": "test only",
    }
    (folder / MODEL_JSON).write_text(json.dumps(manifest, indent=2))
    return folder


def synthetic_photo(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """Writes a smooth random RGB PNG (no face) and returns its path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
    pixels = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def tiny_config_file(folder: Path) -> Path:
    """Writes :data:`TINY_TOML` to ``folder/tiny.toml``."""
    p = Path(folder) / "tiny.toml"
    p.write_text(TINY_TOML)
    return p


def real_photo() -> Path | None:
    """One real face photo from the shared folder, or None when absent."""
    for name in ("img12.jpg", "couple.jpg"):
        p = PHOTOS / name
        if p.is_file():
            return p
    return None
