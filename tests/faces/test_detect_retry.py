"""Faces a user expects found (issue 19, item 12): a sideways photo without EXIF, and the
message listing what was tried when there really is no face."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dhr.errors import FaceNotFoundError
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from dhr.pipeline import Pipeline
    from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model

    return Pipeline.from_pretrained(str(make_tiny_model(tmp_path_factory.mktemp("m") / "model")),
                                    config=TINY_CONFIG, device="cpu")


@pytest.mark.parametrize("k", [1, 3])
def test_sideways_photo_is_found_by_rotation(pipe, k):
    from dhr.faces.detect import detect_faces
    from dhr.io.image import load_image

    photo = load_image(shared_path("datasets", "photos", "img12.jpg"))
    upright = detect_faces(photo)[0]
    side = dataclasses.replace(photo, pixels=np.ascontiguousarray(np.rot90(photo.pixels, k)))
    with pytest.raises(FaceNotFoundError):
        detect_faces(side)  # the premise: dlib alone misses it
    aligned = pipe.align(side)[0]
    assert any("face found rotated" in n and "tried: as is" in n for n in aligned.notes), aligned.notes
    # Mapped back to the sideways photo, the face aligns to the same crop as the upright one.
    ref = pipe.align(photo)[0]
    diff = np.abs(aligned.crop.astype(float) - ref.crop.astype(float)).mean()
    assert diff < 8.0, diff
    H, W = photo.pixels.shape[:2]
    left, top, right, bottom = upright.box
    want = (top, W - 1 - right, bottom, W - 1 - left) if k == 1 else (H - 1 - bottom, left, H - 1 - top, right)
    assert np.allclose(aligned.source_box, want, atol=12), (aligned.source_box, want)


def test_no_face_lists_what_was_tried(pipe):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    with pytest.raises(FaceNotFoundError, match="tried: as is, contrast-normalised, rotated 90°, rotated 180°, "
                                                "rotated 270°, border padded"):
        pipe.align(noise)
    aligned = pipe.align(noise, whole_image=True)[0]
    assert any("no face found (tried:" in n for n in aligned.notes)


def test_very_dark_photo_is_found_by_contrast_normalisation(pipe):
    from dhr.faces.detect import detect_faces
    from dhr.io.image import load_image

    photo = load_image(shared_path("datasets", "photos", "img12.jpg"))
    upright = detect_faces(photo)[0]
    dark = dataclasses.replace(photo, pixels=(photo.pixels.astype(np.float64) / 20).astype(np.uint8))
    with pytest.raises(FaceNotFoundError):
        detect_faces(dark)  # the premise: dlib alone misses it
    aligned = pipe.align(dark)[0]
    assert any("face found contrast-normalised" in n for n in aligned.notes), aligned.notes
    assert np.allclose(aligned.source_box, upright.box, atol=12)
    assert aligned.crop.max() <= 13  # aligned on the photo itself, not on the normalised copy


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 300, 3), (30, 30, 3)])
def test_photo_too_small_for_a_face_says_so(pipe, shape):
    tiny = np.full(shape, 128, dtype=np.uint8)
    with pytest.raises(FaceNotFoundError, match=rf"is {shape[1]}×{shape[0]} px: too small to hold a usable face"):
        pipe.align(tiny)
    assert pipe.align(tiny, whole_image=True)[0].crop.shape[:2] == (pipe.resolution, pipe.resolution)


def test_detector_accepts_arrays_with_size_one_axes():
    from dhr.faces.detect import find_faces
    from dhr.io.image import Photo

    for shape, k in [((1, 1, 3), 2), ((1, 1, 3), 3), ((1, 40, 3), 2)]:
        # a rotated view keeps negative strides on size-1 axes even after np.ascontiguousarray: dlib refused them
        pixels = np.ascontiguousarray(np.rot90(np.zeros(shape, dtype=np.uint8), k))
        photo = Photo(pixels=pixels, original_size=(pixels.shape[1], pixels.shape[0]))
        assert find_faces(photo, min_size=1).faces == ()
