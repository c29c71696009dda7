"""Framing check: a crop aligned with the model's template matches it; the same face aligned with
FFHQ's looser framing does not, and the message says how it differs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dhr.errors import ShapeError
from dhr.faces.align import AlignTemplate, align_face
from dhr.faces.framing import Framing, framing_of, framing_warning

TEMPLATE = AlignTemplate.from_dict(json.loads(
    (Path(__file__).resolve().parents[2] / "src/dhr/assets/models/faces-64/template.json").read_text()))


@pytest.fixture(scope="module")
def astronaut_face():
    pytest.importorskip("dlib", reason="face detection needs dlib (pip install 'dhr[faces]')")
    from skimage import data

    from dhr.faces.detect import detect_faces
    from dhr.io.image import Photo

    px = data.astronaut()
    photo = Photo(pixels=px, original_size=(px.shape[1], px.shape[0]))
    return photo, detect_faces(photo)[0]


def test_own_template_matches_ffhq_framing_does_not(astronaut_face):
    photo, face = astronaut_face
    own = align_face(photo, face, TEMPLATE.with_size(256))
    f = framing_of(own.landmarks, own.size, TEMPLATE)
    assert f.matches() and abs(f.scale - 1) < 1e-6 and f.shift < 1e-6 and abs(f.angle) < 1e-4
    ffhq = align_face(photo, face, AlignTemplate.ffhq(256))
    g = framing_of(ffhq.landmarks, ffhq.size, TEMPLATE)
    assert not g.matches() and g.scale > 1.2, g  # FFHQ crops are looser: faces smaller than faces-64 wants
    msg = framing_warning([g, g, f], TEMPLATE, what="the benchmark images")
    assert msg and "'utkface-64'" in msg and "smaller than the template expects" in msg and "2 outside" in msg
    assert framing_warning([f, f, g], TEMPLATE) is None  # the median matches
    assert framing_warning([], TEMPLATE) is None


def test_scaling_and_shifting_the_landmarks_changes_the_framing(astronaut_face):
    photo, face = astronaut_face
    own = align_face(photo, face, TEMPLATE.with_size(256))
    c = np.array([127.5, 127.5])
    smaller = c + (own.landmarks - c) * 0.5
    assert framing_of(smaller, 256, TEMPLATE).scale == pytest.approx(2.0, rel=1e-6)
    moved = framing_of(own.landmarks + [64.0, 0.0], 256, TEMPLATE)
    assert moved.shift == pytest.approx(0.25, rel=1e-6) and not moved.matches()
    assert Framing(1.1, 0.01, 2.0).matches() and not Framing(0.8, 0.0, 0.0).matches()
    with pytest.raises(ShapeError, match=r"\(68, 2\)"):
        framing_of(np.zeros((5, 2)), 256, TEMPLATE)


def test_benchmark_warns_on_framing_mismatch(astronaut_face, caplog):
    """The benchmark compares its (given, only resized) crops with the model's template."""
    import logging
    from types import SimpleNamespace

    from dhr.bench.inputs import BenchImage, check_framing

    photo, face = astronaut_face
    model = SimpleNamespace(template=TEMPLATE.to_dict(), resolution=64)

    def item(template):
        a = align_face(photo, face, template.with_size(64))
        return BenchImage("x.png", a.crop, (64, 64), [], landmarks=a.landmarks)

    with caplog.at_level(logging.WARNING):
        ok = check_framing([item(TEMPLATE)] * 3, model)
    assert ok["matches"] is True and ok["warning"] is None and ok["checked"] == 3 and not caplog.records
    with caplog.at_level(logging.WARNING):
        bad = check_framing([item(AlignTemplate.ffhq())] * 3, model)
    assert bad["matches"] is False and bad["median_scale"] > 1.2 and "benchmark images" in bad["warning"]
    assert any("framed differently" in r.getMessage() for r in caplog.records)
