"""Tests of dhr.segmentation.error_map: vectorised superpixel scores against the reference's loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dhr.errors import ConfigError, ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.segmentation.error_map import compute_error_maps, error_image, superpixel_scores
from dhr.segmentation.superpixels import slic_labels


def _reference_scores(maps, labels):
    """The reference's per-superpixel loop: binary mask, nearest-resized per layer, masked mean, summed."""
    out = []
    for k in range(1, int(labels.max()) + 1):
        mask = (labels == k).float()[None, None]
        v = 0.0
        for m in maps:
            mk = F.interpolate(mask, size=m.shape[-2:], mode="nearest")[0]
            v += float((m * mk).sum() / mk.sum())
        out.append(v)
    return torch.tensor(out)


def test_vectorised_scores_equal_reference_loop():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 64, 64, generator=g) * 2 - 1
    labels = slic_labels(img, n_segments=30, compactness=10)
    maps = [torch.rand(1, s, s, generator=g) for s in (64, 32, 16)]
    scores, vanished = superpixel_scores(maps, labels, tiny="reference")
    ref = _reference_scores(maps, labels)
    assert scores.shape == (int(labels.max()),)
    assert torch.allclose(scores, ref, atol=1e-5, equal_nan=True)
    assert torch.equal(vanished, torch.isnan(ref))


def test_vanished_superpixel_policies():
    labels = torch.ones(16, 16, dtype=torch.int64)
    labels[1, 1] = 2
    maps = [torch.full((1, 16, 16), 0.5), torch.arange(16.0).view(1, 4, 4) / 16]
    s_ref, v_ref = superpixel_scores(maps, labels, tiny="reference")
    assert torch.isnan(s_ref[1]) and v_ref.tolist() == [False, True]
    s_up, v_up = superpixel_scores(maps, labels)
    assert not v_up.any()
    up = F.interpolate(maps[1][None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0, 1, 1]
    assert s_up[1].item() == pytest.approx(0.5 + up.item())
    assert s_up[0] == s_ref[0]


def test_bad_inputs():
    labels = torch.ones(8, 8, dtype=torch.int64)
    with pytest.raises(ShapeError):
        superpixel_scores([], labels)
    with pytest.raises(ShapeError):
        superpixel_scores([torch.zeros(1, 8, 8)], labels - 1)
    with pytest.raises(ShapeError):
        superpixel_scores([torch.zeros(1, 8, 8)], labels.float())
    with pytest.raises(ConfigError):
        superpixel_scores([torch.zeros(1, 8, 8)], labels, tiny="nan")


def test_compute_error_maps_and_image():
    torch.manual_seed(0)
    lp = LPIPS("alex")
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1
    maps = compute_error_maps(lp, x, y)
    ref = lp.layer_maps(x[None], y[None])
    assert [m.shape for m in maps] == [r.shape[1:] for r in ref]
    assert all(torch.allclose(m, r[0]) for m, r in zip(maps, ref))
    img = error_image(maps, 64)
    assert img.shape == (1, 64, 64)
    assert torch.allclose(img[None], lp.spatial(x[None], y[None]), atol=1e-5)
    assert np.isfinite(img.numpy()).all()
