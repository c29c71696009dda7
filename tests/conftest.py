"""Shared pytest fixtures: tiny random models and the optional ../shared folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhr.models.stylegan2 import Generator, GeneratorConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path inside ../shared; skips the test with a reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the project's ../shared folder is not beside this checkout)")
    return p


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs tiny models on 2 shared cores: one intra-op thread is faster and avoids
    # OpenMP spin-waiting when several processes compete for the CPU.
    torch.set_num_threads(1)


TINY = GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)


@pytest.fixture
def tiny_generator() -> Generator:
    """A 32 px random generator with 32 channels, fixed seed, eval mode."""
    torch.manual_seed(0)
    return Generator(TINY).eval()
