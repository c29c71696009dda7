"""Editing metrics: attribute change per unit, identity similarity, region preservation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhr.errors import ConfigError
from dhr.metrics.editing import (
    attribute_change,
    classifier_scores,
    identity_similarity,
    region_preservation,
)


class _MeanBrightness(torch.nn.Module):
    """'Classifier' whose score is the mean brightness (known change under an offset)."""

    def scores(self, x):
        return {"bright": x.mean(dim=[1, 2, 3]), "const": torch.zeros(x.shape[0])}


def test_attribute_change_per_unit_strength():
    before = torch.zeros(2, 3, 8, 8)
    after = before + 0.3
    d = attribute_change(_MeanBrightness(), before, after, strength=2.0, attribute="bright")
    assert torch.allclose(d, torch.full((2,), 0.15))
    assert attribute_change(_MeanBrightness(), before, after, -3.0, "bright")[0].item() == pytest.approx(-0.1)
    with pytest.raises(ConfigError, match="does not score"):
        attribute_change(_MeanBrightness(), before, after, 1.0, "age")
    with pytest.raises(ConfigError):
        attribute_change(_MeanBrightness(), before, after, 0.0, "bright")


def test_classifier_scores_with_the_attribute_classifier():
    from dhr.models.small_nets import AttributeClassifier, ClassifierConfig

    torch.manual_seed(0)
    c = AttributeClassifier(ClassifierConfig(resolution=32, channels=(4, 4))).eval()
    s = classifier_scores(c, torch.zeros(2, 3, 32, 32))
    assert set(s) == {"age", "gender"} and s["age"].shape == (2,)
    assert bool(((s["gender"] >= 0) & (s["gender"] <= 1)).all())


class _PixelIdentity:
    """Identity model whose embedding is the flattened image: similarity 1 - L2 distance."""

    name = "pixels"
    threshold = None

    def embed(self, image, landmarks=None):
        return image.flatten()

    def similarity(self, a, b):
        return 1.0 - float(torch.linalg.vector_norm(a - b))


def test_identity_similarity_pairs_images():
    a = torch.zeros(2, 3, 2, 2)
    b = a.clone()
    b[1, 0, 0, 0] = 0.5
    sims = identity_similarity(_PixelIdentity(), a, b)
    assert sims == pytest.approx([1.0, 0.5])
    assert identity_similarity(_PixelIdentity(), a[0], b[0]) == pytest.approx([1.0])


def test_identity_similarity_with_dlib_prefers_the_same_image():
    pytest.importorskip("dlib")
    from dhr.faces.identity import DlibIdentity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    ident = DlibIdentity()
    same = identity_similarity(ident, x, x)[0]
    other = identity_similarity(ident, x, y)[0]
    assert same == pytest.approx(1.0, abs=1e-5) and other < same


def test_region_preservation_inside_and_outside():
    class _Spatial(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().mean(dim=[1, 2, 3])

        def spatial(self, x, y):
            return (x - y).abs().mean(dim=1, keepdim=True)

    ref = torch.zeros(1, 3, 8, 8)
    edited = ref.clone()
    edited[..., 4:, :] = 0.5  # only the bottom half changes
    top = torch.zeros(1, 1, 8, 8)
    top[..., :4, :] = 1
    kept = region_preservation(_Spatial(), ref, edited, top)
    changed = region_preservation(_Spatial(), ref, edited, 1 - top)
    assert kept["mse"].item() == 0.0 and kept["lpips"].item() == 0.0
    assert changed["mse"].item() == pytest.approx(0.25) and changed["lpips"].item() == pytest.approx(0.5)
    only_mse = region_preservation(None, ref, edited, torch.zeros(1, 1, 8, 8))
    assert set(only_mse) == {"mse"} and math.isnan(only_mse["mse"].item())
    assert np.isfinite(changed["mse"].numpy()).all()
