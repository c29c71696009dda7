"""Tests of dhr.pipeline.Pipeline on a tiny random 32 px model folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import ConfigError, EditError, FaceNotFoundError, ImageError
from dhr.pipeline import (
    EditResult,
    PhotoInversion,
    Pipeline,
    as_photo,
    edit_label,
    resolve_device,
)
from tests.pipeline_fixtures import (
    TINY_CONFIG,
    TINY_TOML,
    make_tiny_model,
    real_photo,
    synthetic_photo,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    model = make_tiny_model(root / "model")
    photo = synthetic_photo(root / "photo.png")
    pipe = Pipeline.from_pretrained(model, device="cpu", config=TINY_CONFIG, seed=0)
    inv = pipe.invert(photo, whole_image=True)
    return pipe, inv, photo, root


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_as_photo_sources(tmp_path):
    path = synthetic_photo(tmp_path / "p.png", size=(20, 10))
    from_path = as_photo(path)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(from_path.pixels, pixels)
    assert np.array_equal(as_photo(Image.open(path)).pixels, pixels)
    assert np.array_equal(as_photo(pixels).pixels, pixels)
    t = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert np.array_equal(as_photo(t).pixels, pixels)
    assert as_photo(pixels).sha256 == as_photo(pixels.copy()).sha256
    with pytest.raises(ImageError):
        as_photo(pixels.astype(np.float32))
    with pytest.raises(ImageError):
        as_photo(42)
    # In-memory images get the file loader's conversions and checks.
    deep = np.zeros((4, 6), np.uint16)
    deep[:, 3:] = 65535
    sixteen = as_photo(Image.fromarray(deep))  # I;16: scaled to 8 bits, not saturated to white
    assert sixteen.pixels[0, 0].tolist() == [0, 0, 0] and sixteen.pixels[0, 5].tolist() == [255, 255, 255]
    assert any("I;16" in n for n in sixteen.notes)
    unit = as_photo(Image.fromarray(np.full((4, 6), 0.5, np.float32)))  # F in 0..1: mid grey, not black
    assert 126 <= int(unit.pixels[0, 0, 0]) <= 128
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10, 3), np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(ImageError, match="empty"):
            as_photo(empty)
    with pytest.raises(ImageError, match="NaN or inf"):
        as_photo(torch.full((3, 8, 8), float("nan")))
    closed = Image.open(path)
    closed.close()
    with pytest.raises(ImageError, match="cannot read the PIL image"):
        as_photo(closed)


def test_invert_whole_image_result(setup):
    _, invs, _, _ = setup
    assert len(invs) == 1
    inv = invs[0]
    assert isinstance(inv, PhotoInversion)
    assert inv.whole_image and inv.stem == "photo_whole" and inv.method == "dhr"
    assert any("whole image" in n for n in inv.notes)
    assert any("without a face parser" in n for n in inv.notes)
    assert inv.photo is not None and inv.photo.pixels.shape == (40, 48, 3)
    assert inv.image.size == (32, 32) and inv.aligned_image.size == (32, 32)
    mask = inv.mask_image
    assert mask is not None and mask.mode == "L" and mask.size == (32, 32)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    arr = inv.to_numpy()
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    t = inv.to_tensor()
    assert torch.equal(t, inv.inversion.image.cpu())
    assert {"align_s", "embed_s", "coarse_s", "refine_s"} <= set(inv.timings)
    assert set(inv.final_losses()) == {"loss_in", "loss_out"}
    assert inv.inversion.meta["alignment"]["whole_image"] is True


def test_no_face_raises_with_hint(setup):
    pipe, _, photo, _ = setup
    with pytest.raises(FaceNotFoundError, match="whole_image=True"):
        pipe.invert(photo)


def _same(a: PhotoInversion, b: PhotoInversion) -> bool:
    x, y = a.inversion, b.inversion
    # codes, weights and feature bit for bit; the image is rendered in a batch there (float rounding)
    return (torch.equal(x.ws, y.ws) and bool((x.image - y.image).abs().max() <= 1e-5)
            and torch.equal(x.feature, y.feature)
            and x.weight_delta.keys() == y.weight_delta.keys()
            and all(torch.equal(x.weight_delta[k], y.weight_delta[k]) for k in x.weight_delta)
            and a.stem == b.stem and a.photo.sha256 == b.photo.sha256)


def test_invert_many_equals_one_at_a_time_and_isolates_failures(setup, tmp_path):
    pipe, invs, photo, _ = setup
    other = synthetic_photo(tmp_path / "other.png", seed=4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    many = pipe.invert_many([photo, broken, other, photo], whole_image=True)
    assert len(many) == 4 and isinstance(many[1], ImageError)
    alone = pipe.invert(other, whole_image=True)
    assert _same(many[0][0], invs[0]) and _same(many[2][0], alone[0]) and _same(many[3][0], invs[0])
    assert not _same(many[0][0], alone[0])
    # no face and no whole-image fallback: that photo's error, the others are kept
    assert isinstance(pipe.invert_many([photo])[0], FaceNotFoundError)


def test_invert_many_falls_back_to_one_at_a_time_when_the_batch_fails(setup, tmp_path, monkeypatch):
    pipe, invs, photo, _ = setup
    other = synthetic_photo(tmp_path / "other.png", seed=4)
    real = Pipeline._engine
    calls = []

    def engine(self, config, preps, progress):
        calls.append(len(preps))
        if len(preps) > 1:
            raise MemoryError("batch too large")
        if preps[0].photo.sha256 != invs[0].photo.sha256:
            raise ImageError("this photo only")
        return real(self, config, preps, progress)

    monkeypatch.setattr(Pipeline, "_engine", engine)
    many = pipe.invert_many([photo, other], whole_image=True)
    assert calls == [2, 1, 1]
    assert _same(many[0][0], invs[0]) and isinstance(many[1], ImageError)
    with pytest.raises(ConfigError):
        pipe.invert_many([photo], method="nope")


def test_a_diverged_inversion_or_render_is_an_error_not_a_result(setup, tmp_path, monkeypatch):
    """NaN results are failures with advice (they used to count as successes: black images, exit 0)."""
    import dataclasses

    from dhr.errors import DivergedError

    pipe, invs, photo, _ = setup
    other = synthetic_photo(tmp_path / "other.png", seed=4)
    real = Pipeline._engine

    def engine(self, config, preps, progress):  # the second photo's optimisation blows up
        out = real(self, config, preps, progress)
        return [dataclasses.replace(inv, image=inv.image * float("nan")) if p.photo.sha256 != invs[0].photo.sha256
                else inv for p, inv in zip(preps, out)]

    monkeypatch.setattr(Pipeline, "_engine", engine)
    many = pipe.invert_many([photo, other], whole_image=True)
    assert _same(many[0][0], invs[0]) and isinstance(many[1], DivergedError)
    assert "other.png" in str(many[1]) and "lower the learning rates" in str(many[1])
    with pytest.raises(DivergedError, match="NaN"):
        pipe.invert(other, whole_image=True)
    broken = dataclasses.replace(invs[0], inversion=dataclasses.replace(
        invs[0].inversion, ws=invs[0].inversion.ws * float("nan")))
    with pytest.raises(DivergedError, match="invert the photo again"):
        pipe.edit(broken, age=1.0)


def test_api_arguments_of_the_wrong_kind_are_dhr_errors(setup):
    pipe, invs, photo, _ = setup
    for bad in ("0", 1.0, True, -1):
        with pytest.raises(ConfigError, match="face_index"):
            pipe.align(photo, face_index=bad, whole_image=True)
    assert len(pipe.align(photo, face_index=np.int64(0), whole_image=True)) == 1  # numpy integers are integers
    for inv in (None, "photo.png"):
        with pytest.raises(EditError, match="needs a PhotoInversion"):
            pipe.edit(inv, age=1.0)
    for edits in ([("age", 1.0)], "age"):
        with pytest.raises(EditError, match="must map direction names"):
            pipe.edit(invs[0], edits)
    with pytest.raises(ConfigError, match="images must be a list"):
        pipe.invert_many(str(photo))
    with pytest.raises(ConfigError, match=r"aligned\[0\] must be a non-empty list of AlignedFace"):
        pipe.invert_many([photo, photo], aligned=[[5], None])
    from dhr.errors import CheckpointError

    for stem in (None, "", "a\0b", "n" * 300):
        with pytest.raises(CheckpointError, match="bundle"):
            pipe.save_bundle(invs[0], stem)


def test_edit_renders_without_optimising(setup):
    pipe, invs, _, _ = setup
    inv = invs[0]
    same = pipe.edit(inv)
    assert isinstance(same, EditResult) and same.strengths == {} and same.name == "inversion"
    torch.testing.assert_close(same.tensor, inv.inversion.image.cpu(), atol=1e-5, rtol=0)
    out = pipe.edit(inv, {"age": 2}, smile=-1)
    assert list(out.strengths) == ["age", "smile"] and out.name == "age+2_smile-1"
    assert (out.tensor - same.tensor).abs().max() > 1e-3
    assert out.crop.size == (32, 32)
    assert out.pasted is not None and out.pasted.size == (48, 40)
    assert out.paste_mask.shape == (40, 48)
    # Outside the blend mask the photo is untouched.
    outside = out.paste_mask == 0
    assert np.array_equal(out.pasted_pixels[outside], inv.photo.pixels[outside])
    with pytest.raises(EditError, match="known directions: age, smile"):
        pipe.edit(inv, agee=1)
    with pytest.raises(EditError, match="not a number"):
        pipe.edit(inv, {"age": "lots"})


def test_sweep(setup):
    pipe, invs, _, _ = setup
    sw = pipe.sweep(invs[0], "age", [-1, 0, 1])
    assert sw.strengths == (-1.0, 0.0, 1.0) and len(sw.frames) == 3
    assert np.array_equal(sw.frames[1], invs[0].to_numpy())
    assert not np.array_equal(sw.frames[0], sw.frames[2])
    assert sw.grid.ndim == 3 and sw.grid.dtype == np.uint8
    pasted = pipe.sweep(invs[0], "age", [0], paste=True)
    assert pasted.frames[0].shape == (40, 48, 3)


def test_bundle_round_trip(setup, tmp_path):
    pipe, invs, _, _ = setup
    inv = invs[0]
    pipe.save_bundle(inv, tmp_path / "b" / inv.stem)
    back = pipe.load_bundle(tmp_path / "b" / f"{inv.stem}.json")
    assert back.stem == inv.stem and back.photo is not None and back.whole_image
    np.testing.assert_array_equal(back.aligned.matrix, inv.aligned.matrix)
    a = pipe.edit(inv, age=1.5)
    b = pipe.edit(back, age=1.5)
    torch.testing.assert_close(a.tensor, b.tensor, atol=1e-5, rtol=0)
    assert np.array_equal(a.pasted_pixels, b.pasted_pixels)


def test_bundle_without_photo(setup, tmp_path):
    pipe = setup[0]
    moved = synthetic_photo(tmp_path / "gone.png", seed=3)
    pipe_enc = Pipeline(pipe.model, config=TINY_CONFIG, device="cpu")
    inv = pipe_enc.invert(moved, whole_image=True, method="encoder")[0]
    assert inv.inversion.domain is None and inv.mask_image is None
    pipe.save_bundle(inv, tmp_path / "x")
    moved.unlink()
    back = pipe.load_bundle(tmp_path / "x")
    assert back.photo is None and any("not found" in n for n in back.notes)
    res = pipe.edit(back, age=1)
    assert res.pasted is None and res.crop.size == (32, 32)
    with pytest.raises(ImageError, match="not available"):
        pipe.paste(back)


def test_methods_and_config(setup, tmp_path):
    pipe, _, photo, _ = setup
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(TINY_TOML)
    p2 = Pipeline(pipe.model, config=cfg_file, device="cpu")
    assert p2.config == pipe.config
    pti = p2.invert(photo, whole_image=True, method="pti")[0]
    assert pti.method == "pti" and pti.inversion.weight_delta and pti.inversion.feature is None
    with pytest.raises(ConfigError):
        p2.invert(photo, whole_image=True, method="gan")
    with pytest.raises(ConfigError, match="stepz"):
        Pipeline(pipe.model, config={"refine": {"stepz": 1}}, device="cpu")
    with pytest.raises(ConfigError):
        Pipeline(pipe.model, config=3.5, device="cpu")
    assert Pipeline(pipe.model, config=TINY_CONFIG, device="cpu", method="encoder").config.method == "encoder"
    with pytest.raises(ConfigError):
        Pipeline(pipe.model, device="cpu", method="stylegan")
    assert pipe.validate_edits({"smile": "1"}, age=-2) == {"smile": 1.0, "age": -2.0}
    with pytest.raises(ConfigError):
        Pipeline(pipe.model, device="cpu", perceptual="resnet")



def test_overrides_complete_the_config_at_construction(setup):
    pipe, _, _, _ = setup
    p2 = Pipeline(pipe.model, config=TINY_CONFIG, device="cpu", method="pti",
                  overrides=["refine.steps=3", "method=dhr"])
    # --set comes last: over the config file and over method=
    assert p2.config.refine.steps == 3 and p2.config.method == "dhr"
    assert p2.config.optim == pipe.config.optim
    with pytest.raises(ConfigError, match="stepz"):
        Pipeline(pipe.model, config=TINY_CONFIG, device="cpu", overrides=["refine.stepz=3"])
    with pytest.raises(AttributeError):
        p2.config = pipe.config  # fixed at construction: build another pipeline instead

def test_seed_reproducible(setup):
    pipe, _, photo, _ = setup
    a = pipe.invert(photo, whole_image=True, method="optim")[0]
    b = pipe.invert(photo, whole_image=True, method="optim")[0]
    assert torch.equal(a.inversion.ws, b.inversion.ws)
    other = Pipeline(pipe.model, config=TINY_CONFIG, device="cpu", seed=5)
    c = other.invert(photo, whole_image=True, method="optim")[0]
    assert not torch.equal(a.inversion.ws, c.inversion.ws)
    assert c.inversion.meta["seed"] == 5


def test_aligned_face_input(setup):
    pipe, invs, _, _ = setup
    res = pipe.invert(invs[0].aligned, method="encoder")
    assert len(res) == 1 and res[0].photo is None
    assert pipe.edit(res[0], age=1).pasted is None


def test_edit_label():
    assert edit_label({}) == "inversion"
    assert edit_label({"age": 2.0, "smile": -0.5}) == "age+2_smile-0.5"


def test_real_photo_faces(setup):
    path = real_photo()
    if path is None:
        pytest.skip("no shared photo (../shared/datasets/photos) beside the checkout")
    pipe = setup[0]
    faces = pipe.align(path)
    assert faces and all(f.size == 32 and f.landmarks is not None for f in faces)
    with pytest.raises(FaceNotFoundError, match="does not exist"):
        pipe.align(path, face_index=len(faces))
    inv = pipe.invert(path, face_index=0)[0]
    assert inv.stem.endswith("_face0") and not inv.whole_image
    assert inv.inversion.domain.mask_parsing is not None  # the landmark parser was used
    out = pipe.edit(inv, age=1)
    assert out.pasted.size == Image.open(path).size


def test_model_recommended_config_is_the_base(tmp_path):
    import json

    from dhr.config import InvertConfig

    model = make_tiny_model(tmp_path / "m")
    manifest = json.loads((model / "model.json").read_text())
    manifest["config"] = {"refine": {"steps": 7, "weight_steps": 5}, "pti": {"steps": 9}}
    (model / "model.json").write_text(json.dumps(manifest))
    pipe = Pipeline.from_pretrained(model, device="cpu")
    assert (pipe.config.refine.steps, pipe.config.refine.weight_steps, pipe.config.pti.steps) == (7, 5, 9)
    # The user's options apply over the model's; a complete InvertConfig replaces them.
    pipe = Pipeline.from_pretrained(model, device="cpu", config={"refine": {"steps": 3}})
    assert (pipe.config.refine.steps, pipe.config.refine.weight_steps, pipe.config.pti.steps) == (3, 5, 9)
    toml = tmp_path / "c.toml"
    toml.write_text("[pti]\nsteps = 2\n")
    pipe = Pipeline.from_pretrained(model, device="cpu", config=toml)
    assert (pipe.config.refine.steps, pipe.config.pti.steps) == (7, 2)
    assert Pipeline.from_pretrained(model, device="cpu", config=InvertConfig()).config == InvertConfig()
    manifest["config"] = {"refine": {"stepz": 7}}
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"model\.json: recommended 'config' is invalid.*refine\.stepz"):
        Pipeline.from_pretrained(model, device="cpu")


def test_user_ood_mask_replaces_segmentation(setup, tmp_path):
    pipe, _, photo, _ = setup
    h, w = 40, 48
    m = np.zeros((h, w), np.uint8)
    m[:, : w // 2] = 255  # left half of the photo is out of domain
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    inv = pipe.invert(photo, whole_image=True, ood_mask=path)[0]
    dom = inv.inversion.domain.mask[0]
    R = dom.shape[-1]
    # The whole-image fit keeps left/right: the crop's left part is out of domain where the photo
    # is (rows outside the photo are padding: in domain), the right part in domain.
    rows = (inv.aligned.photo_to_crop(np.array([[0.0, 0.0], [0.0, h - 1.0]]))[:, 1] * R / inv.aligned.size).round()
    r0, r1 = int(rows.min()) + 1, int(rows.max())
    assert dom[r0:r1, : R // 4].mean() == 0 and dom[:, -R // 4:].mean() == 1
    assert any("given by the user" in n for n in inv.notes)
    same = pipe.invert(photo, whole_image=True, ood_mask=m > 0)[0]
    assert torch.equal(same.inversion.domain.mask, inv.inversion.domain.mask)
    with pytest.raises(ImageError, match="photo is 48x40"):
        pipe.invert(photo, whole_image=True, ood_mask=np.zeros((10, 10)))
    with pytest.raises(ConfigError, match="method 'dhr' only"):
        pipe.invert(photo, whole_image=True, ood_mask=path, method="pti")
    from dhr.errors import ShapeError

    # An aligned face takes a mask of the crop's size.
    a = inv.aligned
    with pytest.raises(ShapeError, match="empty"):
        pipe.invert(a, ood_mask=np.ones((a.size, a.size)))
    crop_mask = np.zeros((a.size, a.size))
    crop_mask[: a.size // 2] = 1
    top = pipe.invert(a, ood_mask=crop_mask)[0].inversion.domain.mask[0]
    assert top[: R // 4].mean() == 0 and top[-R // 4:].mean() == 1


def test_paste_modes(setup):
    pipe, invs, _, _ = setup
    inv = invs[0]
    photo = inv.photo.pixels
    assert pipe.paste_mode == "auto"  # the 32 px crop covers a 48 px square of the photo: upsampled -> delta
    same = pipe.edit(inv)
    assert same.paste_mode == "delta"
    np.testing.assert_array_equal(same.pasted_pixels, photo)  # unedited delta: 0 pixels changed
    np.testing.assert_array_equal(np.asarray(pipe.paste(inv)), photo)
    zero = pipe.edit(inv, age=0.0)
    np.testing.assert_array_equal(zero.pasted_pixels, photo)
    edited = pipe.edit(inv, age=2)
    changed = (edited.pasted_pixels != photo).any(-1)
    assert edited.paste_mode == "delta" and changed.any() and not (changed & (edited.paste_mask == 0)).any()
    # The delta is the change of the crop: pasting the edit over the reference by hand gives the same photo.
    ref = pipe.reference_crop(inv)
    torch.testing.assert_close(ref, same.tensor, atol=0, rtol=0)
    np.testing.assert_array_equal(np.asarray(pipe.paste(inv, edited.tensor)), edited.pasted_pixels)
    crop = pipe.edit(inv, age=2, paste_mode="crop")
    assert crop.paste_mode == "crop" and not np.array_equal(crop.pasted_pixels, edited.pasted_pixels)
    outside = crop.paste_mask == 0
    np.testing.assert_array_equal(crop.pasted_pixels[outside], photo[outside])
    unedited_crop = pipe.edit(inv, paste_mode="crop")
    assert (unedited_crop.pasted_pixels != photo).any()  # the full-crop paste replaces the face
    np.testing.assert_array_equal(unedited_crop.pasted_pixels[unedited_crop.paste_mask == 0],
                                  photo[unedited_crop.paste_mask == 0])
    frames = pipe.sweep(inv, "age", [0, 1], paste=True, paste_mode="delta").frames
    np.testing.assert_array_equal(frames[0], photo)
    np.testing.assert_array_equal(frames[1], pipe.edit(inv, age=1).pasted_pixels)
    with pytest.raises(ConfigError, match="paste_mode"):
        pipe.edit(inv, age=1, paste_mode="blend")
    with pytest.raises(ConfigError, match="paste_mode"):
        Pipeline(pipe.model, config=TINY_CONFIG, device="cpu", paste_mode="blend")


def test_delta_round_trip_file_keeps_pixels_and_metadata(setup, tmp_path):
    from PIL import ImageCms

    from dhr.io.image import load_image, save_image

    pipe = setup[0]
    src = synthetic_photo(tmp_path / "src.png", size=(48, 40), seed=3)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010E] = "a test photo"  # ImageDescription
    tagged = tmp_path / "tagged.png"
    Image.open(src).save(tagged, icc_profile=icc, exif=exif.tobytes())
    photo = load_image(tagged)
    assert photo.icc_profile == icc and photo.exif
    inv = pipe.invert(photo, whole_image=True)[0]
    res = pipe.edit(inv)
    assert res.paste_mode == "delta"
    out = save_image(tmp_path / "out.png", res.pasted_pixels, like=photo)
    back = load_image(out)
    np.testing.assert_array_equal(back.pixels, photo.pixels)
    assert back.icc_profile == photo.icc_profile
    assert Image.open(out).getexif().get(0x010E) == "a test photo"


def test_skipped_faces_are_counted_and_reported(tmp_path, caplog):
    """Two faces side by side: face 0 is processed, the other is reported skipped, with the count and
    the detector box recorded on the aligned face (run.json's face entry reads them)."""
    pytest.importorskip("dlib", reason="face detection needs dlib (pip install 'dhr[faces]')")
    import logging

    import numpy as np
    from skimage import data

    from dhr.io.image import load_image
    from dhr.jobs import face_entry
    from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model

    face = data.astronaut()[:300, 100:400]
    two = np.concatenate([face, face[:, ::-1]], axis=1)
    Image.fromarray(two).save(tmp_path / "two.png")
    pipe = Pipeline.from_pretrained(make_tiny_model(tmp_path / "m"), device="cpu", config=TINY_CONFIG)
    photo = load_image(tmp_path / "two.png")
    with caplog.at_level(logging.WARNING):
        one = pipe.align(photo, face_index=0)
    assert len(one) == 1 and one[0].faces_found == 2
    assert "2 faces found, processed face 0, skipped 1; use --all-faces" in one[0].notes[-1]
    assert any("skipped 1" in r.getMessage() for r in caplog.records)
    both = pipe.align(photo)
    assert len(both) == 2 and all(a.faces_found == 2 and not any("skipped" in n for n in a.notes) for a in both)
    inv = pipe.invert(photo, method="encoder", face_index=1)[0]
    entry = face_entry(inv)
    assert entry["faces_found"] == 2 and entry["face_index"] == 1
    left, top, right, bottom = entry["box"]
    assert 0 <= left < right <= two.shape[1] and 0 <= top < bottom <= two.shape[0]
    assert any("skipped 1" in n for n in entry["notes"])


def test_a_missing_or_damaged_occluder_network_fails_at_construction(setup, tmp_path):
    from dhr.errors import CheckpointError
    from dhr.segmentation.occluder import OccluderNet, OccluderNetConfig, register_occluder_component
    from dhr.models.native import save_pretrained

    _, _, _, root = setup
    model = root / "model"
    with pytest.raises(ConfigError, match="no occluder network there"):
        Pipeline.from_pretrained(model, device="cpu", config=TINY_CONFIG, overrides=[f"segment.occluder={tmp_path}"])
    register_occluder_component()
    net_dir = tmp_path / "occluder"
    save_pretrained(OccluderNet(OccluderNetConfig(channels=(4, 4, 4, 4))), net_dir)
    ok = Pipeline.from_pretrained(model, device="cpu", config=TINY_CONFIG,
                                  overrides=[f"segment.occluder={net_dir}"])
    assert ok.config.segment.occluder == str(net_dir)
    (net_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):  # before any photo is processed
        Pipeline.from_pretrained(model, device="cpu", config=TINY_CONFIG, overrides=[f"segment.occluder={net_dir}"])
    # a method that does not segment does not need the network
    Pipeline.from_pretrained(model, device="cpu", config=TINY_CONFIG, method="pti",
                             overrides=[f"segment.occluder={net_dir}"])
