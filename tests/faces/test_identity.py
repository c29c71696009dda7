"""Tests of dhr.faces.identity: dlib descriptors on same/different pairs, fallback, adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dhr.faces.align import AlignTemplate, align_face
from dhr.faces.detect import detect_faces
from dhr.faces.identity import DlibIdentity, IdentityModel, IRSEIdentity
from dhr.io.image import load_image

pytest.importorskip("dlib")


def _aligned(path: Path) -> np.ndarray:
    photo = load_image(path)
    return align_face(photo, detect_faces(photo)[0], AlignTemplate.ffhq(256)).crop


def test_same_and_different_person(photos: Path) -> None:
    ident = DlibIdentity()
    assert isinstance(ident, IdentityModel)
    a, b = _aligned(photos / "img20.jpg"), _aligned(photos / "img21.jpg")  # same person (master.csv)
    c = _aligned(photos / "img12.jpg")
    ea, eb, ec = ident.embed(a), ident.embed(b), ident.embed(torch.from_numpy(c).permute(2, 0, 1) / 127.5 - 1)
    assert ea.shape == (128,) and ea.dtype == torch.float32
    assert ident.similarity(ea, eb) > ident.threshold > ident.similarity(ea, ec)
    assert ident.similarity(ea, ea) == pytest.approx(1.0)
    assert ident.distance(ea, eb) == pytest.approx(1 - ident.similarity(ea, eb))


def test_fallback_without_a_face() -> None:
    ident = DlibIdentity()
    rng = np.random.default_rng(0)
    emb = ident.embed(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert emb.shape == (128,) and torch.isfinite(emb).all()
    assert ident.last_notes and "whole image" in ident.last_notes[0]


class _TinyEmbedder(torch.nn.Module):
    def embed(self, x: torch.Tensor, *, crop: str = "none") -> torch.Tensor:
        return torch.nn.functional.normalize(x.mean((2, 3)), dim=1)


def test_irse_adapter_uses_cosine() -> None:
    ident = IRSEIdentity(_TinyEmbedder(), crop="none", name="tiny")
    assert isinstance(ident, IdentityModel)
    red = torch.zeros(3, 8, 8)
    red[0] = 1
    green = torch.zeros(3, 8, 8)
    green[1] = 1
    assert ident.similarity(ident.embed(red), ident.embed(red)) == pytest.approx(1.0)
    assert ident.similarity(ident.embed(red), ident.embed(green)) == pytest.approx(0.0, abs=1e-6)
    assert ident.embed(np.zeros((8, 8, 3), np.uint8)).shape == (3,)
