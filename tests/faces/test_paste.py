"""Tests of dhr.faces.paste: round trip invariants, mask support, seam score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dhr.errors import ConfigError, ShapeError
from dhr.faces.align import AlignTemplate, align_landmarks, align_whole_image
from dhr.faces.detect import detect_faces
from dhr.faces.paste import face_blend_mask, face_side_in_photo, paste_back, resolve_paste_mode, seam_score
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


# -- delta paste -------------------------------------------------------------------------------


def _textured_photo(size: int = 256, amplitude: float = 40.0) -> Photo:
    """A smooth gradient with a fine 1-pixel checkerboard on top (the detail a 32 px crop cannot hold)."""
    yy, xx = np.mgrid[:size, :size]
    smooth = np.stack([60 + xx * 0.5, 80 + yy * 0.4, 120 + 0 * xx], -1)
    checker = np.where((xx + yy) % 2 == 0, amplitude, -amplitude)[..., None]
    pixels = np.clip(np.rint(smooth + checker), 0, 255).astype(np.uint8)
    return Photo(pixels=pixels, original_size=(size, size), path=Path("textured.png"))


def _small_crop_face(photo: Photo, landmarks: np.ndarray, size: int = 32):
    """A face about 200 px wide in the photo, aligned into a ``size`` px crop (the face is upsampled on paste)."""
    return align_landmarks(photo, landmarks * 0.75 + [32.0, 20.0], AlignTemplate.ffhq(size))


def _brighter(crop: np.ndarray, amount: int = 12) -> np.ndarray:
    return np.clip(crop.astype(int) + amount, 0, 255).astype(np.uint8)


def _high_pass_energy(img: np.ndarray, where: np.ndarray) -> float:
    from scipy.ndimage import gaussian_filter

    gray = img.astype(np.float64).mean(-1)
    return float(((gray - gaussian_filter(gray, 1.0)) ** 2)[where].mean())


@pytest.mark.parametrize("mode", ["crop", "delta"])
def test_unedited_round_trip_leaves_outside_untouched(landmarks: np.ndarray, mode: str) -> None:
    photo = _textured_photo()
    aligned = _small_crop_face(photo, landmarks)
    result = paste_back(photo, aligned, aligned.crop, reference=aligned.crop, mode=mode)
    assert result.mode == mode
    outside = result.mask == 0
    assert 0.2 < outside.mean() < 0.95
    np.testing.assert_array_equal(result.image[outside], photo.pixels[outside])


def test_delta_unedited_round_trip_is_bit_exact(landmarks: np.ndarray) -> None:
    photo = _textured_photo()
    aligned = _small_crop_face(photo, landmarks)
    crop = aligned.crop
    result = paste_back(photo, aligned, crop, reference=crop.copy(), mode="delta")
    np.testing.assert_array_equal(result.image, photo.pixels)  # 0 pixels changed, inside the mask too
    assert (result.mask > 0.99).any()
    # Tensors (what the pipeline passes) too, including values outside [-1, 1].
    t = aligned.to_tensor() * 1.2
    np.testing.assert_array_equal(paste_back(photo, aligned, t, reference=t.clone(), mode="delta").image, photo.pixels)
    # The full-crop paste of the same crop does change the face (the texture is lost).
    assert (paste_back(photo, aligned, crop, mode="crop").image != photo.pixels).any()


@pytest.mark.parametrize("mode", ["crop", "delta"])
def test_edit_changes_pixels_only_inside_the_mask(landmarks: np.ndarray, mode: str) -> None:
    photo = _textured_photo()
    aligned = _small_crop_face(photo, landmarks)
    result = paste_back(photo, aligned, _brighter(aligned.crop), reference=aligned.crop, mode=mode)
    changed = (result.image != photo.pixels).any(-1)
    assert changed.any()
    assert not (changed & (result.mask == 0)).any()
    if mode == "delta":  # the change is the edit (+12) weighted by the feathered mask, to rounding
        diff = result.image.astype(int) - photo.pixels.astype(int)
        assert np.abs(diff - 12 * result.mask[..., None]).max() <= 1.0


def test_delta_keeps_the_photo_texture(landmarks: np.ndarray) -> None:
    photo = _textured_photo()
    aligned = _small_crop_face(photo, landmarks)
    edited = _brighter(aligned.crop)
    delta = paste_back(photo, aligned, edited, reference=aligned.crop, mode="delta")
    crop = paste_back(photo, aligned, edited, reference=aligned.crop, mode="crop")
    core = delta.mask > 0.99
    assert core.sum() > 2000
    original = _high_pass_energy(photo.pixels, core)
    assert original > 100.0
    assert _high_pass_energy(delta.image, core) == pytest.approx(original, rel=0.05)
    assert _high_pass_energy(crop.image, core) < 0.1 * original


def test_auto_mode_follows_the_face_size(landmarks: np.ndarray) -> None:
    photo = _textured_photo()
    small = _small_crop_face(photo, landmarks, 32)  # 32 px crop of a ~200 px face: upsampled on paste
    big = _small_crop_face(photo, landmarks, 512)  # 512 px crop of the same face: downsampled
    assert face_side_in_photo(small) == pytest.approx(face_side_in_photo(big))
    assert 32 < face_side_in_photo(small) < 512
    assert resolve_paste_mode("auto", small) == "delta"
    assert resolve_paste_mode("auto", big) == "crop"
    assert resolve_paste_mode("auto", big, model_size=64) == "delta"  # rendered at 64 px, resized to 512
    assert resolve_paste_mode("auto", small, has_reference=False) == "crop"
    assert resolve_paste_mode("crop", small) == "crop" and resolve_paste_mode("delta", big) == "delta"
    assert paste_back(photo, small, small.crop, reference=small.crop).mode == "delta"
    assert paste_back(photo, small, small.crop).mode == "crop"  # no reference: nothing to take a delta of
    assert paste_back(photo, big, big.crop, reference=big.crop).mode == "crop"
    with pytest.raises(ConfigError, match="paste mode"):
        paste_back(photo, small, small.crop, mode="blend")
    with pytest.raises(ConfigError, match="reference"):
        paste_back(photo, small, small.crop, mode="delta")
    with pytest.raises(ShapeError, match="edited_crop"):
        paste_back(photo, small, small.crop, reference=np.zeros((8, 8, 3), np.uint8), mode="delta")
