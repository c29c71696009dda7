"""Integration tests on the bundled faces-64 model (no ../shared, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr.cli.example import example_photo
from dhr.models.zoo import available_models, load_model


@pytest.fixture(scope="module")
def pipe():
    if "faces-64" not in available_models():
        pytest.skip("the bundled model faces-64 is not installed")
    from dhr.pipeline import Pipeline

    cfg = {"coarse": {"steps": 4}, "refine": {"steps": 6, "weight_steps": 3}}
    return Pipeline.from_pretrained("faces-64", device="cpu", config=cfg, seed=0)


def test_components_load():
    m = load_model("faces-64")
    assert m.resolution == 64 and m.encoder is not None and m.perceptual is not None
    assert {"age", "gender"} <= set(m.directions.names())
    x = torch.zeros(1, 3, 64, 64)
    assert m.perceptual(x, x).item() == 0.0


def test_photo_to_edited_photo(pipe):
    photo = np.asarray(example_photo("astronaut"))
    inv = pipe.invert(photo, method="dhr")[0]
    assert torch.isfinite(inv.to_tensor()).all()
    target = inv.inversion.target
    # The refinement improves on its own starting point (the encoder's code), in-domain and overall.
    start = pipe.invert(photo, method="encoder")[0].inversion
    assert torch.equal(start.ws, inv.inversion.ws)
    m = inv.inversion.domain.mask

    def err(img, w):
        return float(((img - target).square() * w).sum() / (3 * w.sum()))

    ones = torch.ones_like(m)
    assert err(inv.inversion.image, ones) < err(start.image, ones)
    assert err(inv.inversion.image, m) < err(start.image, m)
    # Edits move the model's own attribute classifier the right way, monotonically.
    C = pipe.model.classifier
    ages = [float(C.scores(pipe.edit(inv, age=s, paste=False).tensor[None])["age"]) for s in (-2, 0, 2)]
    assert ages == sorted(ages) and ages[0] < ages[2]
    female = [float(C.scores(pipe.edit(inv, gender=s, paste=False).tensor[None])["gender"]) for s in (-2, 2)]
    assert female[0] < female[1]
    out = pipe.edit(inv, age=2)
    assert out.pasted is not None and out.pasted.size == (512, 512)
    assert (out.tensor - inv.inversion.image).abs().mean() > 1e-3


def test_bundled_model_recommends_longer_refinement():
    """faces-64 ships its own refinement budget (see dhr.train.export.RECOMMENDED_CONFIG)."""
    from dhr.train.export import RECOMMENDED_CONFIG

    cfg = load_model("faces-64").recommended_config()
    assert cfg.refine.steps == RECOMMENDED_CONFIG["refine"]["steps"] > 100
    assert cfg.refine.weight_steps == RECOMMENDED_CONFIG["refine"]["weight_steps"]
