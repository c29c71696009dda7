"""Tests of dhr.segmentation.superpixels: uint8 conversion and SLIC (RGB vs the reference's BGR)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr.errors import ConfigError, ShapeError
from dhr.segmentation.superpixels import slic_labels, to_uint8


def _astronaut(size: int = 64) -> torch.Tensor:
    import skimage.data
    from PIL import Image

    a = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 127.5 - 1


def test_to_uint8_rounds_and_truncates():
    pixels = torch.arange(256, dtype=torch.float32)
    x = (pixels / 127.5 - 1).view(1, 16, 16).expand(3, -1, -1)
    rounded = to_uint8(x)
    assert rounded.shape == (16, 16, 3) and rounded.dtype == np.uint8
    assert np.array_equal(rounded[..., 0].reshape(-1), np.arange(256))  # exact round trip
    truncated = to_uint8(x, truncate=True)
    diff = rounded.astype(int) - truncated.astype(int)
    assert set(np.unique(diff)) <= {0, 1} and diff.sum() > 0  # truncation loses a level on some pixels
    assert to_uint8(torch.full((3, 2, 2), 3.0)).max() == 255 and to_uint8(torch.full((3, 2, 2), -3.0)).max() == 0
    with pytest.raises(ShapeError):
        to_uint8(torch.zeros(1, 3, 4, 4))


def test_slic_matches_skimage_and_starts_at_one():
    from skimage.segmentation import slic

    img = _astronaut()
    labels = slic_labels(img, n_segments=50, compactness=30, sigma=1)
    assert labels.shape == (64, 64) and labels.dtype == torch.int64
    assert labels.min() == 1
    assert torch.equal(torch.unique(labels), torch.arange(1, int(labels.max()) + 1))
    expect = slic(to_uint8(img), n_segments=50, compactness=30, sigma=1, start_label=1)
    assert np.array_equal(labels.numpy(), expect)


def test_bgr_flag_changes_labels_on_colour_image():
    img = _astronaut()
    rgb = slic_labels(img, n_segments=50)
    bgr = slic_labels(img, n_segments=50, bgr=True)
    assert not torch.equal(rgb, bgr)
    swapped = slic_labels(img.flip(0), n_segments=50)  # RGB of the channel-swapped image == BGR of the image
    assert torch.equal(swapped, bgr)
    grey = img.mean(0, keepdim=True).expand(3, -1, -1)
    assert torch.equal(slic_labels(grey, n_segments=50), slic_labels(grey, n_segments=50, bgr=True))


def test_slic_bad_options():
    with pytest.raises(ConfigError):
        slic_labels(torch.zeros(3, 8, 8), n_segments=0)
    with pytest.raises(ConfigError):
        slic_labels(torch.zeros(3, 8, 8), compactness=0)
