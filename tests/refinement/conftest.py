"""Fixtures shared by the refinement tests: a 32 px generator in which every parameter matters."""

from __future__ import annotations

import pytest
import torch

from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32))
    with torch.no_grad():  # non-zero noise strengths and biases so every parameter matters
        for n, p in g.named_parameters():
            if n.endswith("noise_strength") or n.endswith(".bias") and "affine" not in n:
                p.normal_(0, 0.1)
    return g.eval()


@pytest.fixture(scope="module")
def lp():
    torch.manual_seed(1)
    return LPIPS("squeeze")
