"""Tests of dhr.faces.parsing: label tables, ParsingResult helpers, landmark parser, adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dhr.errors import FaceNotFoundError, ShapeError
from dhr.faces.align import AlignTemplate, align_face, apply_matrix
from dhr.faces.detect import detect_faces, five_points
from dhr.faces.parsing import (
    BISENET_LABELS,
    FARL_LABELS,
    BiSeNetParser,
    FaceParser,
    FaRLParser,
    LandmarkParser,
    ParsingResult,
)
from dhr.io.image import load_image


def test_label_tables_follow_the_reference() -> None:
    assert len(FARL_LABELS.classes) == len(BISENET_LABELS.classes) == 19
    assert FARL_LABELS.indices("ood") == [0, 3, 16, 17, 18]
    assert FARL_LABELS.indices("skin") == [2]
    assert FARL_LABELS.indices("inner") == list(range(4, 14))
    assert BISENET_LABELS.indices("ood") == [0, 9, 15, 16, 18]
    assert BISENET_LABELS.classes[17] == "hair" and BISENET_LABELS.groups[17] == "other"
    from dhr.models.bisenet import BISENET_CLASSES
    from dhr.models.farl import FARL_CELEBM_CLASSES

    assert BISENET_LABELS.classes == BISENET_CLASSES
    assert FARL_LABELS.classes == FARL_CELEBM_CLASSES


def test_parsing_result_helpers() -> None:
    probs = torch.full((19, 4, 4), 1.0 / 19, dtype=torch.float64)
    result = ParsingResult(probabilities=probs, labels=FARL_LABELS)
    thr = result.thresholds(0.7, 0.8, 0.6)
    assert thr.dtype == torch.float64 and thr.shape == (19,)
    assert thr[2] == 0.7 and (thr[4:14] == 0.8).all() and thr[0] == 0.6 and thr[14] == 0.6
    # reference quirk: uniform probabilities give 5/19 < 0.5 out-of-domain
    torch.testing.assert_close(result.ood_probability(), torch.full((4, 4), 5 / 19, dtype=torch.float64))
    assert result.label_map().shape == (4, 4)
    with pytest.raises(ShapeError):
        ParsingResult(probabilities=torch.zeros(7, 4, 4), labels=FARL_LABELS)


def test_landmark_parser_on_synthetic_face(landmarks: np.ndarray) -> None:
    parser = LandmarkParser()
    assert isinstance(parser, FaceParser)
    image = torch.zeros(3, 256, 256)
    result = parser.parse(image, landmarks)
    p = result.probabilities
    assert p.shape == (7, 256, 256)
    torch.testing.assert_close(p.sum(0), torch.ones(256, 256))
    names = result.class_names

    def label_at(xy: np.ndarray) -> str:
        x, y = np.round(xy).astype(int)
        return names[int(p[:, y, x].argmax())]

    assert label_at(landmarks[36:42].mean(0)) == "eyes"
    assert label_at(landmarks[42:48].mean(0)) == "eyes"
    assert label_at(landmarks[60:68].mean(0)) == "inner_mouth"
    assert label_at((landmarks[51] + landmarks[62]) / 2) == "lips"
    assert label_at(landmarks[29]) == "nose"
    assert label_at(landmarks[19] + [0, 1]) == "brows"
    assert label_at((landmarks[3] + landmarks[31]) / 2) == "skin"  # cheek
    assert label_at(landmarks[19] - [0, 25]) == "skin"  # forehead
    assert label_at(np.array([5.0, 5.0])) == "other"
    assert (result.ood_probability() == 0).all()
    assert (result.group_probability("inner") + result.group_probability("skin") + result.group_probability("other") == 1).all()


def test_landmark_parser_needs_a_face() -> None:
    with pytest.raises(FaceNotFoundError, match="landmarks"):
        LandmarkParser().parse(torch.zeros(3, 64, 64))


def test_bisenet_adapter_with_a_small_random_model() -> None:
    from dhr.models.bisenet import BiSeNet

    torch.manual_seed(0)
    parser = BiSeNetParser(BiSeNet(19).eval(), input_size=64)
    result = parser.parse(torch.rand(3, 48, 48) * 2 - 1)
    assert result.probabilities.shape == (19, 48, 48) and result.labels is BISENET_LABELS
    torch.testing.assert_close(result.probabilities.sum(0), torch.ones(48, 48))


class _ChannelEcho(nn.Module):
    """Stand-in for the FaRL network: 19 logits per pixel, class 2 scored by the red channel."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        logits = torch.zeros(x.shape[0], 19, x.shape[2], x.shape[3])
        logits[:, 2] = 10 * x[:, 0]
        return (logits,)


def test_farl_adapter_alignment_and_warp_back(landmarks: np.ndarray) -> None:
    parser = FaRLParser(_ChannelEcho())
    m = parser.crop_matrix(landmarks)
    target = (np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]]) / 256 - 1)
    target = (target * 0.8 + 1) * 447 / 2 - 0.5
    assert np.abs(apply_matrix(m, five_points(landmarks)) - target).max() < 12  # least-squares fit
    image = torch.ones(3, 256, 256)  # red everywhere -> class 2 wins inside the parser crop
    result = parser.parse(image, landmarks)
    p = result.probabilities
    torch.testing.assert_close(p.sum(0), torch.ones(256, 256))
    cx, cy = np.round(landmarks[30]).astype(int)
    assert p[2, cy, cx] > 0.99
    assert result.ood_probability()[cy, cx] < 0.01


def test_landmark_parser_on_real_crop(photos: Path) -> None:
    photo = load_image(photos / "img12.jpg")
    aligned = align_face(photo, detect_faces(photo)[0], AlignTemplate.ffhq(256))
    given = LandmarkParser().parse(aligned.to_tensor(), aligned.landmarks)
    detected = LandmarkParser().parse(aligned.to_tensor())
    agree = (given.label_map() == detected.label_map()).float().mean()
    assert agree > 0.95
    assert given.group_probability("skin").mean() > 0.1
