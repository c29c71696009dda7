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


def test_bundled_model_ships_the_swept_refinement_budget():
    """faces-64 ships the refinement budget its export writes (dhr.train.export.RECOMMENDED_CONFIG,
    chosen by the settings sweeps of docs/sweep-faces64 and docs/sweep-faces64-v2)."""
    from dhr.train.export import RECOMMENDED_CONFIG

    cfg = load_model("faces-64").recommended_config()
    assert cfg.refine.steps == RECOMMENDED_CONFIG["refine"]["steps"]
    assert cfg.refine.weight_steps == RECOMMENDED_CONFIG["refine"]["weight_steps"]
    assert cfg.refine.weight_lr == RECOMMENDED_CONFIG["refine"]["weight_lr"]
    assert cfg.refine.feature_resolution == RECOMMENDED_CONFIG["refine"]["feature_resolution"]


def test_bundle_round_trip_edits_and_pastes_like_the_fresh_result(pipe, tmp_path):
    """After save + load: edit (crop and pasted photo), paste, sweep and composite_ood equal the
    fresh result within 1/255 (tensors in [-1, 1]: 2/255; uint8 photos: 1 level)."""
    from dhr.engine import render

    path = tmp_path / "astronaut.png"
    example_photo("astronaut").save(path)
    fresh = pipe.invert(str(path), method="dhr")[0]
    pipe.save_bundle(fresh, tmp_path / "b" / fresh.stem)
    back = pipe.load_bundle(tmp_path / "b" / fresh.stem)
    assert back.photo is not None and back.photo.sha256 == fresh.photo.sha256 and back.notes == ()
    assert np.array_equal(back.aligned.crop, fresh.aligned.crop)
    assert np.allclose(back.aligned.matrix, fresh.aligned.matrix)
    assert (back.inversion.image - fresh.inversion.image).abs().max() <= 2 / 255
    tol = 2 / 255
    for strengths in ({}, {"age": 2.0}, {"gender": -1.5, "age": 1.0}):
        a, b = pipe.edit(fresh, strengths), pipe.edit(back, strengths)
        assert (a.tensor - b.tensor).abs().max() <= tol
        assert np.abs(a.pasted_pixels.astype(int) - b.pasted_pixels.astype(int)).max() <= 1
    # the full-crop paste shows the inversion itself (an unedited delta paste is the photo, by design)
    pa, pb = (np.asarray(pipe.paste(x, mode="crop"), dtype=int) for x in (fresh, back))
    assert np.abs(pa - pb).max() <= 1 and np.abs(pa - np.asarray(fresh.photo.pixels, dtype=int)).max() > 10
    sa, sb = pipe.sweep(fresh, "age", (-2, 0, 2)), pipe.sweep(back, "age", (-2, 0, 2))
    assert all(np.abs(x.astype(int) - y.astype(int)).max() <= 1 for x, y in zip(sa.frames, sb.frames))
    from dhr.editing import apply_edits

    w = apply_edits(fresh.inversion.ws[None], [(pipe.directions["age"], 2.0)])[0]
    with torch.no_grad():
        ca = render(pipe.generator, fresh.inversion, w, composite_ood=True)
        cb = render(pipe.generator, back.inversion, w, composite_ood=True)
    assert (ca - cb).abs().max() <= tol
    # a bundle without its crop (older dhr): the crop is re-cut from the verified source photo
    from dhr.bundle import save_bundle

    save_bundle(fresh.inversion, tmp_path / "old" / fresh.stem, include_target=False)
    old = pipe.load_bundle(tmp_path / "old" / fresh.stem)
    assert torch.equal(old.inversion.target.cpu(), fresh.inversion.target.cpu())
    assert any("rebuilt" in n for n in old.notes)
    # the photo moved: give it explicitly (checked by sha256), else pasting is unavailable with a note
    moved = tmp_path / "moved.png"
    path.rename(moved)
    lost = pipe.load_bundle(tmp_path / "b" / fresh.stem)
    assert lost.photo is None and any("not found" in n for n in lost.notes)
    from dhr.errors import CheckpointError

    with pytest.raises(CheckpointError, match="photo="):
        pipe.load_bundle(tmp_path / "old" / fresh.stem)
    again = pipe.load_bundle(tmp_path / "b" / fresh.stem, photo=moved)
    assert np.abs(np.asarray(pipe.paste(again, mode="crop"), dtype=int) - pa).max() <= 1
    other = tmp_path / "other.png"
    example_photo("astronaut").rotate(90).save(other)
    from dhr.errors import ImageError

    with pytest.raises(ImageError, match="not the one"):
        pipe.load_bundle(tmp_path / "b" / fresh.stem, photo=other)
