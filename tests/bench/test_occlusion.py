"""Synthetic occluders: determinism, exact masks, coverage, every shape and fill."""

from __future__ import annotations

import numpy as np
import pytest

from dhr.bench.occlusion import FILLS, SHAPES, occlude
from dhr.errors import ConfigError, ShapeError


def _face(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx, yy, (xx + yy) // 2], -1) * (200 / size)
    return np.clip(base + rng.normal(0, 5, (size, size, 3)), 0, 255).astype(np.uint8)


def test_same_seed_same_occluder_and_different_seed_differs():
    img, src = _face(0), [_face(1), _face(2)]
    a = occlude(img, 7, sources=src)
    b = occlude(img, 7, sources=src)
    c = occlude(img, 8, sources=src)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert (a.shape, a.fill, a.params) == (b.shape, b.fill, b.params)
    assert not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fill", FILLS)
def test_mask_is_exactly_the_changed_pixels(shape, fill):
    img = _face(3)
    occ = occlude(img, 11, sources=[_face(4)], shape=shape, fill=fill)
    changed = np.any(occ.image != img, axis=-1)
    assert occ.mask.dtype == bool and occ.mask.shape == img.shape[:2]
    assert np.array_equal(changed, occ.mask)
    assert 0.05 <= occ.coverage <= 0.3
    assert occ.image.dtype == np.uint8 and (occ.shape, occ.fill) == (shape, fill)


def test_object_fill_needs_sources_and_random_draw_avoids_it_without():
    img = _face(5)
    with pytest.raises(ConfigError, match="sources"):
        occlude(img, 0, fill="object")
    fills = {occlude(img, s).fill for s in range(40)}
    assert "object" not in fills and fills <= set(FILLS)


def test_coverage_bounds_are_respected_over_many_seeds():
    img = _face(6)
    cov = [occlude(img, s, sources=[_face(7)], min_area=0.1, max_area=0.2).coverage for s in range(30)]
    assert min(cov) >= 0.1 and max(cov) <= 0.2
    shapes = {occlude(img, s).shape for s in range(40)}
    assert shapes == set(SHAPES)


def test_bad_inputs():
    with pytest.raises(ShapeError):
        occlude(np.zeros((32, 40, 3), np.uint8), 0)
    with pytest.raises(ShapeError):
        occlude(np.zeros((32, 32, 3), np.float32), 0)
    with pytest.raises(ConfigError):
        occlude(_face(), 0, min_area=0.5, max_area=0.2)
    with pytest.raises(ValueError):
        occlude(_face(), 0, shape="triangle")
