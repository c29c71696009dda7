"""Tests of dhr.faces.detect: model location, caching, detection on real photos, landmark helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dhr.errors import FaceNotFoundError
from dhr.faces import detect
from dhr.faces.detect import (
    convex_hull,
    crop_landmarks,
    detect_face,
    detect_faces,
    dlib_models_dir,
    face_outline,
    find_faces,
    five_points,
)
from dhr.io.image import Photo, load_image

pytest.importorskip("dlib")


def test_models_dir_and_cache() -> None:
    folder = dlib_models_dir()
    assert (folder / "shape_predictor_68_face_landmarks.dat").is_file()
    assert detect._shape_predictor() is detect._shape_predictor()
    assert detect._hog_detector() is detect._hog_detector()


def test_landmark_helpers(landmarks: np.ndarray) -> None:
    pts = five_points(landmarks)
    assert pts.shape == (5, 2)
    np.testing.assert_allclose(pts[0], landmarks[36:42].mean(0))
    np.testing.assert_allclose(pts[2], landmarks[30])
    outline = face_outline(landmarks, forehead=0.5)
    assert outline.shape == (27, 2)
    # the raised brows lie above the real brows
    assert outline[17:, 1].max() < landmarks[17:27, 1].min()
    hull = convex_hull(np.array([[0, 0], [2, 0], [1, 1], [2, 2], [0, 2]]))
    assert len(hull) == 4
    with pytest.raises(ValueError):
        five_points(landmarks[:10])


def test_no_face_names_the_file() -> None:
    photo = Photo(pixels=np.full((120, 160, 3), 128, np.uint8), original_size=(160, 120), path=Path("blank.png"))
    assert find_faces(photo).faces == ()
    with pytest.raises(FaceNotFoundError, match="blank.png"):
        detect_faces(photo)
    assert crop_landmarks(photo.pixels) is None
    fallback = crop_landmarks(photo.pixels, fallback="full_image")
    assert fallback is not None and fallback.detector == "full_image" and fallback.landmarks.shape == (68, 2)


def test_real_photos(photos: Path) -> None:
    photo = load_image(photos / "couple.jpg")
    faces = detect_faces(photo)
    assert len(faces) == 2
    assert faces[0].size >= faces[1].size and [f.index for f in faces] == [0, 1]
    for face in faces:
        assert face.landmarks.shape == (68, 2)
        left, top, right, bottom = face.box
        inside = (face.landmarks[:, 0] > left - 0.2 * (right - left)) & (face.landmarks[:, 0] < right + 0.2 * (right - left))
        assert inside.all()
    assert detect_face(photo, index=1).box == faces[1].box
    with pytest.raises(FaceNotFoundError, match="face index 5"):
        detect_face(photo, index=5)


def test_tiny_faces_are_skipped_with_reason(photos: Path) -> None:
    photo = load_image(photos / "selfie-many-people.jpg")
    detection = find_faces(photo, min_size=100)
    assert detection.skipped and all("min_size=100" in s.reason for s in detection.skipped)
    assert all(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 100 for f in detection.faces)
