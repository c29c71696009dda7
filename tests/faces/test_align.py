"""Tests of dhr.faces.align: the FFHQ quad, exact transforms, resampling conventions, templates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dhr.errors import ConfigError, FaceNotFoundError
from dhr.faces.align import (
    AlignTemplate,
    align_landmarks,
    align_photo,
    align_whole_image,
    apply_matrix,
    quad_from_landmarks,
    similarity_from_points,
    template_from_images,
    warp_to_crop,
)
from dhr.faces.detect import detect_faces
from dhr.io.image import Photo, load_image

from conftest import UTKFACE, make_landmarks


def _photo(h: int = 300, w: int = 400, seed: int = 0) -> Photo:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Photo(pixels=pixels, original_size=(w, h), path=Path("synthetic.png"))


def test_ffhq_quad_matches_recipe(landmarks: np.ndarray) -> None:
    t = AlignTemplate.ffhq(256)
    c, x, y = quad_from_landmarks(landmarks, t)
    lm = landmarks
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    e2e, e2m = eye_r - eye_l, (lm[48] + lm[54]) / 2 - eye_avg
    xr = e2e - np.flipud(e2m) * [-1, 1]
    xr = xr / np.hypot(*xr) * max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    np.testing.assert_allclose(x, xr)
    np.testing.assert_allclose(y, np.flipud(xr) * [-1, 1])
    np.testing.assert_allclose(c, eye_avg + e2m * 0.1)
    # the crop's outer corners are exactly the FFHQ quad corners
    m = t.matrix(landmarks)
    corners = apply_matrix(np.linalg.inv(m), np.array([[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]]))
    np.testing.assert_allclose(corners, np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), atol=1e-9)


def test_matrix_round_trip_and_landmarks(landmarks: np.ndarray) -> None:
    photo = _photo()
    lm = landmarks * 0.8 + [90.0, 30.0]
    aligned = align_landmarks(photo, lm, AlignTemplate.ffhq(64))
    np.testing.assert_allclose(aligned.inverse @ aligned.matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(aligned.crop_to_photo(aligned.landmarks), lm, atol=1e-9)
    np.testing.assert_allclose(aligned.photo_to_crop(lm), aligned.landmarks, atol=1e-12)
    assert aligned.crop.shape == (64, 64, 3) and aligned.crop.dtype == np.uint8
    assert aligned.template_name == "ffhq" and aligned.photo_size == (300, 400) and not aligned.whole_image
    assert aligned.to_tensor().shape == (3, 64, 64)


def test_warp_conventions_are_exact() -> None:
    pixels = _photo(64, 64).pixels
    np.testing.assert_array_equal(warp_to_crop(pixels, np.eye(3), 64, pad=False), pixels)
    shift = np.array([[1.0, 0, -5], [0, 1.0, -7], [0, 0, 1]])
    np.testing.assert_array_equal(warp_to_crop(pixels, shift, 32, pad=False), pixels[7:39, 5:37])
    # 2x downscale (pixel centres: u = (x + 0.5) / 2 - 0.5) = exact 2x2 box average
    half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
    box = pixels.astype(np.float64).reshape(32, 2, 32, 2, 3).mean((1, 3))
    out = warp_to_crop(pixels, half, 32, pad=False).astype(np.float64)
    assert np.abs(out - box).max() <= 0.5 + 1e-6


def test_reflection_padding_outside_the_photo() -> None:
    photo = _photo(100, 100)
    # a crop twice the photo size, centred: the border comes from blurred reflection, not black
    m = np.array([[0.5, 0, 25], [0, 0.5, 25], [0, 0, 1]])
    out = warp_to_crop(photo.pixels, m, 100)
    assert out[:10].mean() > 60 and out[:, :10].mean() > 60
    # FFHQ blends the blur up to pad/3 into the photo; the centre is the plain resampled photo
    plain = warp_to_crop(photo.pixels, m, 100, pad=False)
    assert np.abs(out[42:58, 42:58].astype(int) - plain[42:58, 42:58].astype(int)).max() <= 1
    assert np.abs(out[:5].astype(int) - plain[:5].astype(int)).mean() > 10


def test_template_from_landmarks_reproduces_framing() -> None:
    mean = make_landmarks(200)
    for mode in ("quad", "points"):
        t = AlignTemplate.from_landmarks(mean, 200, name="train", mode=mode)
        np.testing.assert_allclose(t.matrix(mean), np.eye(3), atol=1e-6)
        # scaled/rotated/shifted copies of the mean face map back onto it
        a = np.deg2rad(20)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved = (mean @ rot.T) * 2.5 + [300, 120]
        np.testing.assert_allclose(apply_matrix(t.matrix(moved), moved), mean, atol=1e-6)
        assert AlignTemplate.from_dict(t.to_dict()) == t
        assert t.with_size(100).size == 100
    with pytest.raises(ConfigError, match="Unknown AlignTemplate keys"):
        AlignTemplate.from_dict({"size": 10, "bogus": 1})
    with pytest.raises(ConfigError):
        AlignTemplate(mode="points")


def test_similarity_from_points_exact() -> None:
    src = np.random.default_rng(1).normal(size=(5, 2)) * 30
    m = np.array([[0.8, -0.6, 10], [0.6, 0.8, -4], [0, 0, 1]]) * [[1.5], [1.5], [1]]
    np.testing.assert_allclose(similarity_from_points(src, apply_matrix(m, src)), m, atol=1e-9)


def test_whole_image_fallback() -> None:
    photo = _photo(60, 120)
    with pytest.raises(FaceNotFoundError, match="synthetic.png"):
        align_photo(photo, template=AlignTemplate.ffhq(64))
    aligned = align_photo(photo, template=AlignTemplate.ffhq(64), on_missing="whole_image")
    assert aligned.whole_image and aligned.face_index == -1 and aligned.landmarks is None
    assert aligned.template_name == "whole_image" and aligned.notes
    np.testing.assert_allclose(aligned.photo_to_crop(np.array([[59.5, 29.5]])), [[31.5, 31.5]])
    assert align_whole_image(photo).size == 1024


@pytest.mark.parametrize("shape", [(1, 12_000), (12_000, 2), (3, 60_000)])
def test_whole_image_of_a_sliver_stays_small_and_keeps_its_content(shape) -> None:
    """A 1 x 12000 photo used to be padded to a full-resolution square (13.6 GB for 12000 px)."""
    import resource

    h, w = shape
    ramp = np.linspace(0, 255, max(h, w))
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = (ramp[None, :w] if w > h else ramp[:h, None]).round().astype(np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    crop = align_whole_image(Photo(pixels=pixels, original_size=(w, h), path=Path("sliver.png")),
                             AlignTemplate.ffhq(64)).crop
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: far below a padded square
    line = crop[32, :, 0].astype(int) if w > h else crop[:, 32, 0].astype(int)
    assert line[0] < 10 and line[-1] > 245 and (np.diff(line) >= 0).all()  # the ramp, end to end
    np.testing.assert_allclose(line[1:-1], np.linspace(0, 255, 64)[1:-1], atol=6)


def test_real_photo_alignment(photos: Path) -> None:
    photo = load_image(photos / "img12.jpg")
    face = detect_faces(photo)[0]
    aligned = align_landmarks(photo, face.landmarks, AlignTemplate.ffhq(256), source_box=face.box)
    eyes_l, eyes_r = aligned.landmarks[36:42].mean(0), aligned.landmarks[42:48].mean(0)
    # FFHQ framing: eyes level, centred, a quarter of the crop apart at most
    assert abs(np.degrees(np.arctan2(*(eyes_r - eyes_l)[::-1]))) < 5
    assert abs((eyes_l + eyes_r)[0] / 2 - 127.5) < 10
    assert 40 < np.hypot(*(eyes_r - eyes_l)) <= 64 + 1e-6
    assert aligned.crop.std() > 20


def test_template_from_utkface_crops() -> None:
    paths = sorted(UTKFACE.glob("*.jpg"))[:6]
    if not paths:
        pytest.skip(f"UTKFace crops not found at {UTKFACE}")
    t = template_from_images(paths, 200, name="utkface")
    assert t.name == "utkface" and t.size == 200
    # tight crops: the eyes are further apart than in FFHQ framing (eye_scale < 2)
    assert 0.5 < t.eye_scale < 2.0 and abs(t.angle) < 10
