"""Fixtures for the faces tests: synthetic 68-point landmarks and the shared photo folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PHOTOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "photos"
UTKFACE = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "utkface"


def make_landmarks(size: int = 256) -> np.ndarray:
    """A plausible frontal 68-point face centred in a size x size frame (iBUG layout)."""
    s = size / 256.0
    lm = np.zeros((68, 2))
    # jaw from the image-left ear, under the chin, to the image-right ear
    lm[0:17, 0] = np.linspace(58, 198, 17)
    lm[0:17, 1] = 120 + 85 * np.sin(np.linspace(0, np.pi, 17))
    lm[17:22] = np.stack([np.linspace(72, 116, 5), [100, 94, 92, 94, 98]], 1)
    lm[22:27] = np.stack([np.linspace(140, 184, 5), [98, 94, 92, 94, 100]], 1)
    lm[27:31] = np.stack([[128] * 4, np.linspace(112, 150, 4)], 1)
    lm[31:36] = np.stack([np.linspace(112, 144, 5), [158, 161, 163, 161, 158]], 1)

    def eye(cx: float) -> np.ndarray:
        return np.array([[cx - 15, 118], [cx - 7, 112], [cx + 7, 112], [cx + 15, 118], [cx + 7, 122], [cx - 7, 122]])

    lm[36:42] = eye(96)
    lm[42:48] = eye(160)
    outer = [[104, 184], [112, 178], [122, 175], [128, 177], [134, 175], [144, 178], [152, 184],
             [144, 192], [136, 196], [128, 197], [120, 196], [112, 192]]
    lm[48:60] = outer
    inner = [[110, 184], [120, 181], [128, 182], [136, 181], [146, 184], [136, 188], [128, 189], [120, 188]]
    lm[60:68] = inner
    return lm * s


@pytest.fixture
def landmarks() -> np.ndarray:
    return make_landmarks(256)


@pytest.fixture
def photos() -> Path:
    if not (PHOTOS / "img12.jpg").is_file():
        pytest.skip(f"shared photos not found at {PHOTOS} (needs ../shared beside the checkout)")
    return PHOTOS
