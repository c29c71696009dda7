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
    rec = inv.to_tensor() if hasattr(inv, "to_tensor") else inv.inversion.image
    assert torch.isfinite(torch.as_tensor(rec)).all()
    target = inv.inversion.target
    # The refined inversion is closer to the aligned photo than the generator's mean face.
    mean_face = pipe.model.generator(pipe.model.generator.w_avg[None])[0]
    assert (inv.inversion.image - target).square().mean() < (mean_face - target).square().mean()
    out = pipe.edit(inv, age=2)
    assert out.pasted is not None and out.pasted.size == (512, 512)
    assert (out.tensor - inv.inversion.image).abs().mean() > 1e-3


def test_bundled_model_recommends_longer_refinement():
    """faces-64 ships its own refinement budget (see dhr.train.export.RECOMMENDED_CONFIG)."""
    from dhr.train.export import RECOMMENDED_CONFIG

    cfg = load_model("faces-64").recommended_config()
    assert cfg.refine.steps == RECOMMENDED_CONFIG["refine"]["steps"] > 100
    assert cfg.refine.weight_steps == RECOMMENDED_CONFIG["refine"]["weight_steps"]
