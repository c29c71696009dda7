"""Tests of dhr.faces.paste: round trip invariants, mask support, seam score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dhr.errors import ShapeError
from dhr.faces.align import AlignTemplate, align_landmarks, align_whole_image
from dhr.faces.detect import detect_faces
from dhr.faces.paste import face_blend_mask, paste_back, seam_score
from dhr.io.image import Photo, load_image


def _smooth_photo(h: int = 240, w: int = 320) -> Photo:
    yy, xx = np.mgrid[:h, :w]
    pixels = np.stack([xx * 255 / w, yy * 255 / h, 128 + 60 * np.sin(xx / 15.0)], -1).round().astype(np.uint8)
    return Photo(pixels=pixels, original_size=(w, h), path=Path("smooth.png"))


def test_round_trip_synthetic(landmarks: np.ndarray) -> None:
    photo = _smooth_photo()
    lm = landmarks * 0.6 + [80.0, 40.0]
    aligned = align_landmarks(photo, lm, AlignTemplate.ffhq(128))
    result = paste_back(photo, aligned, aligned.crop)
    assert result.image.shape == photo.pixels.shape and result.mask.shape == photo.pixels.shape[:2]
    outside = result.mask == 0
    np.testing.assert_array_equal(result.image[outside], photo.pixels[outside])
    assert outside.mean() > 0.5 and (result.mask > 0.99).any()
    diff = np.abs(result.image.astype(int) - photo.pixels.astype(int))
    assert diff[~outside].mean() < 2.0
    # tensor input gives the same result
    tensor_result = paste_back(photo, aligned, aligned.to_tensor())
    assert np.abs(tensor_result.image.astype(int) - result.image.astype(int)).max() <= 1


def test_edit_lands_inside_the_face(landmarks: np.ndarray) -> None:
    photo = _smooth_photo()
    aligned = align_landmarks(photo, landmarks * 0.6 + [80.0, 40.0], AlignTemplate.ffhq(128))
    white = np.full_like(aligned.crop, 255)
    result = paste_back(photo, aligned, white)
    nose = np.round(aligned.crop_to_photo(aligned.landmarks[30:31])[0]).astype(int)
    assert (result.image[nose[1], nose[0]] >= 254).all()
    assert result.mask[nose[1], nose[0]] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(result.image[result.mask == 0], photo.pixels[result.mask == 0])


def test_mask_support(landmarks: np.ndarray) -> None:
    photo = _smooth_photo()
    aligned = align_landmarks(photo, landmarks * 0.6 + [80.0, 40.0], AlignTemplate.ffhq(128))
    mask = face_blend_mask(aligned, feather=6)
    assert mask.shape == (128, 128) and mask.min() == 0.0 and mask.max() == pytest.approx(1.0)
    assert (mask[0] == 0).all() and (mask[-1] == 0).all() and (mask[:, 0] == 0).all() and (mask[:, -1] == 0).all()
    sharp = face_blend_mask(aligned, feather=0)
    assert set(np.unique(sharp)) <= {0.0, 1.0}
    assert (mask > 0).sum() < (sharp > 0).sum()  # eroded
    whole = align_whole_image(photo, AlignTemplate.ffhq(64))
    assert face_blend_mask(whole, feather=4)[32, 32] == pytest.approx(1.0)


def test_shape_checks(landmarks: np.ndarray) -> None:
    photo = _smooth_photo()
    aligned = align_landmarks(photo, landmarks * 0.6 + [80.0, 40.0], AlignTemplate.ffhq(64))
    with pytest.raises(ShapeError, match="edited_crop"):
        paste_back(photo, aligned, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ShapeError, match="photo"):
        paste_back(np.zeros((10, 10, 3), np.uint8), aligned, aligned.crop)


def test_seam_score(landmarks: np.ndarray) -> None:
    photo = _smooth_photo()
    aligned = align_landmarks(photo, landmarks * 0.6 + [80.0, 40.0], AlignTemplate.ffhq(128))
    same = paste_back(photo, aligned, aligned.crop)
    dark = paste_back(photo, aligned, np.zeros_like(aligned.crop))
    assert seam_score(photo.pixels, photo.pixels, same.mask) == 0.0
    s_same = seam_score(photo.pixels, same.image, same.mask, patch=32)
    s_dark = seam_score(photo.pixels, dark.image, dark.mask, patch=32)
    assert s_dark > 10 * max(s_same, 1e-4)
    calls = []

    def fake_lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        assert x.min() >= -1 and x.max() <= 1
        return (x - y).pow(2).mean((1, 2, 3))

    assert seam_score(photo.pixels, dark.image, dark.mask, fake_lpips, patch=32, max_patches=8) > 0
    assert calls and calls[0][0] <= 8 and tuple(calls[0][1:]) == (3, 32, 32)
    with pytest.raises(ValueError, match="no border"):
        seam_score(photo.pixels, photo.pixels, np.zeros(photo.pixels.shape[:2], np.float32))


def test_round_trip_real_photo(photos: Path) -> None:
    photo = load_image(photos / "img12.jpg")
    face = detect_faces(photo)[0]
    aligned = align_landmarks(photo, face.landmarks, AlignTemplate.ffhq(256))
    result = paste_back(photo, aligned, aligned.crop)
    outside = result.mask == 0
    np.testing.assert_array_equal(result.image[outside], photo.pixels[outside])
    inside = result.mask > 0
    assert np.abs(result.image[inside].astype(int) - photo.pixels[inside].astype(int)).mean() < 4.0
