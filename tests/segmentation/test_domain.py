"""Tests of dhr.segmentation.domain: the reference's thresholding rules on constructed inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import ConfigError, ShapeError
from dhr.segmentation.domain import (
    ParsingLike,
    SegmentConfig,
    reference_parsing_fallback,
    save_domain_pngs,
    segment,
)
from dhr.types import DomainMask

R = 32
CLASSES = ("background", "skin", "eye", "hat")  # background and hat are out-of-domain classes


@dataclass
class FakeParsing:
    """K = 4 classes: thresholds (other, skin, inner, other); OOD = background + hat."""

    probs: torch.Tensor
    class_names: tuple[str, ...] = CLASSES

    def thresholds(self, theta_skin: float, theta_inner: float, theta_other: float) -> torch.Tensor:
        return torch.tensor([theta_other, theta_skin, theta_inner, theta_other])

    def ood_probability(self) -> torch.Tensor:
        return self.probs[0] + self.probs[3]


def quadrants() -> torch.Tensor:
    """Labels 1 (top left), 2 (top right), 3 (bottom left), 4 (bottom right)."""
    lab = torch.ones(R, R, dtype=torch.int64)
    lab[:16, 16:] = 2
    lab[16:, :16] = 3
    lab[16:, 16:] = 4
    return lab


def quad_map(values, size: int = R) -> torch.Tensor:
    """A (1, size, size) map constant on each quadrant."""
    m = torch.empty(1, size, size)
    h = size // 2
    m[0, :h, :h], m[0, :h, h:], m[0, h:, :h], m[0, h:, h:] = values
    return m


def parsing_of(classes) -> FakeParsing:
    """Confident parsing with the given class per quadrant."""
    probs = torch.full((4, R, R), 0.02)
    for q, c in enumerate(classes):
        sel = quadrants() == q + 1
        probs[c][sel] = 0.94
    return FakeParsing(probs)


def image() -> torch.Tensor:
    return torch.zeros(3, R, R)


def run(maps, parsing=None, **cfg) -> DomainMask:
    return segment(image(), image(), maps, parsing=parsing, config=SegmentConfig(**cfg), labels=quadrants())


def quad_values(m: torch.Tensor) -> list[float]:
    return [float(m[0, 0, 0]), float(m[0, 0, R - 1]), float(m[0, R - 1, 0]), float(m[0, R - 1, R - 1])]


def test_protocol():
    assert isinstance(parsing_of([1, 1, 1, 1]), ParsingLike)
    assert isinstance(reference_parsing_fallback(R), ParsingLike)


def test_per_class_threshold_by_dominant_class():
    # all scores 0.75: skin (0.7) out, eye (0.8) in; 0.65: skin out... but other (0.6) out; 0.55 skin in
    maps = [quad_map([0.75, 0.75, 0.65, 0.55])]
    d = run(maps, parsing_of([1, 2, 2, 1]))
    assert quad_values(d.mask_superpixel) == [0.0, 1.0, 1.0, 1.0]
    d = run(maps, parsing_of([1, 2, 1, 2]))
    assert quad_values(d.mask_superpixel) == [0.0, 1.0, 1.0, 1.0]
    d = run([quad_map([0.65, 0.65, 0.65, 0.65])], parsing_of([1, 2, 0, 3]))
    assert quad_values(d.mask_superpixel) == [1.0, 1.0, 0.0, 0.0]
    # configurable thresholds
    d = run([quad_map([0.65, 0.65, 0.65, 0.65])], parsing_of([1, 2, 0, 3]), theta_skin=0.6, theta_other=0.9)
    assert quad_values(d.mask_superpixel) == [0.0, 1.0, 1.0, 1.0]


def test_score_equal_to_its_threshold_is_out_of_domain():
    # in-domain needs v_k < τ strictly (the reference's test); 0.5 and 0.75 are exact in binary
    d = run([quad_map([0.5, 0.75, 0.5, 0.75])], None, theta=0.75)
    assert quad_values(d.mask_superpixel) == [1.0, 0.0, 1.0, 0.0]


def test_dominant_class_is_argmax_of_summed_probabilities():
    """Quadrant 1: 3/4 of its pixels lean to skin (0.4 vs 0.35), 1/4 is certainly eye: summed mass says eye."""
    probs = torch.zeros(4, R, R)
    q1 = quadrants() == 1
    probs[:, ~q1] = torch.tensor([0.0, 1.0, 0.0, 0.0])[:, None]
    probs[:, q1] = torch.tensor([0.25, 0.4, 0.35, 0.0])[:, None]
    probs[:, :4, :16] = torch.tensor([0.0, 0.0, 1.0, 0.0])[:, None, None]
    sel = probs[:, q1]
    assert sel.argmax(0).bincount().argmax() == 1 and sel.sum(1).argmax() == 2  # vote: skin, mass: eye
    d = run([quad_map([0.75, 0.75, 0.75, 0.75])], FakeParsing(probs))
    assert quad_values(d.mask_superpixel) == [1.0, 0.0, 0.0, 0.0]  # eye threshold 0.8 applies


def test_forced_ood_classes_and_product():
    maps = [quad_map([0.1, 0.1, 0.1, 0.9])]
    d = run(maps, parsing_of([0, 1, 3, 2]))
    assert quad_values(d.mask_parsing) == [0.0, 1.0, 0.0, 1.0]  # background, hat out regardless of error
    assert quad_values(d.mask_superpixel) == [1.0, 1.0, 1.0, 0.0]
    assert torch.equal(d.mask, d.mask_superpixel * d.mask_parsing)
    assert quad_values(d.mask) == [0.0, 1.0, 0.0, 0.0]


def test_parsing_threshold_is_strict_half():
    probs = torch.zeros(4, R, R)
    probs[1] = 0.5
    probs[0] = 0.3
    probs[3] = 0.2  # OOD mass exactly 0.5: not < 0.5, out of domain
    probs[0, :16] = 0.29
    d = run([quad_map([0.0] * 4)], FakeParsing(probs))
    assert d.mask_parsing[0, :16].eq(1).all() and d.mask_parsing[0, 16:].eq(0).all()
    d = run([quad_map([0.0] * 4)], FakeParsing(probs), ood_parsing_threshold=0.6)
    assert d.mask_parsing.eq(1).all()


def test_score_is_sum_over_layers():
    fine = quad_map([0.1, 0.2, 0.3, 0.4])
    coarse = quad_map([0.05, 0.5, 0.05, 0.5], size=8)
    tiny = quad_map([0.3, 0.0, 0.0, 0.0], size=4)
    d = run([fine, coarse, tiny])
    assert torch.allclose(d.scores, torch.tensor([0.45, 0.7, 0.35, 0.9]))
    assert quad_values(d.mask_superpixel) == [1.0, 0.0, 1.0, 0.0]  # theta_other 0.6 without parser
    assert len(d.error_maps) == 3 and d.parsing is None and d.mask_parsing is None


def test_single_threshold_mode():
    maps = [quad_map([0.75, 0.75, 0.65, 0.55])]
    d = run(maps, parsing_of([1, 2, 2, 1]), theta=0.7)
    assert quad_values(d.mask_superpixel) == [0.0, 0.0, 1.0, 1.0]
    d = run(maps, None, theta=0.7)
    assert quad_values(d.mask_superpixel) == [0.0, 0.0, 1.0, 1.0]
    d = run(maps, None)  # no parser, no theta: theta_other
    assert quad_values(d.mask_superpixel) == [0.0, 0.0, 0.0, 1.0]


def test_reference_parsing_fallback():
    maps = [quad_map([0.75, 0.65, 0.55, 0.1])]
    d = run(maps, reference_parsing_fallback(R))
    assert d.mask_parsing.eq(1).all()
    assert quad_values(d.mask) == [0.0, 0.0, 1.0, 1.0]  # class 0 everywhere: threshold 0.6
    assert d.parsing.shape == (1, R, R)


def test_disable_stages():
    maps = [quad_map([0.9, 0.1, 0.9, 0.1])]
    p = parsing_of([0, 1, 1, 1])
    d = run(maps, p, use_parsing=False)
    assert d.mask_parsing is None and d.parsing is None
    assert quad_values(d.mask) == [0.0, 1.0, 0.0, 1.0]
    d = run(maps, p, use_superpixels=False)
    assert d.mask_superpixel is None and d.scores is None and d.superpixels is None
    assert quad_values(d.mask) == [0.0, 1.0, 1.0, 1.0]
    d = run(maps, None, use_superpixels=False)
    assert d.mask.eq(1).all()


def _tiny_labels() -> torch.Tensor:
    lab = quadrants()
    lab[1, 1] = 5  # a one-pixel superpixel: nearest-resizing to 8x8 samples rows/cols 0, 4, 8, ...
    return lab


@pytest.mark.parametrize("policy, expect_in", [("reference", 0.0), ("out", 0.0), ("in", 1.0), ("upsample", 1.0)])
def test_tiny_superpixel(policy, expect_in):
    fine = torch.full((1, R, R), 0.1)
    coarse = torch.full((1, 8, 8), 0.1)
    d = segment(image(), image(), [fine, coarse], config=SegmentConfig(tiny_superpixel=policy), labels=_tiny_labels())
    assert d.scores.shape == (5,)
    assert torch.isfinite(d.scores[:4]).all()
    if policy == "upsample":
        assert d.scores[4].item() == pytest.approx(0.2)
    else:
        assert torch.isnan(d.scores[4])
    assert d.mask[0, 1, 1].item() == expect_in
    assert d.mask.sum().item() == R * R - 1 + expect_in


@pytest.mark.parametrize("value, expect", [(0.0, 1.0), (5.0, 0.0)])
def test_degenerate_all_in_all_out(value, expect):
    target = torch.rand(3, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1
    maps = [torch.full((1, R, R), value), torch.full((1, 4, 4), value)]
    d = segment(target, target, maps, parsing=parsing_of([1, 1, 1, 1]), config=SegmentConfig(n_segments=20))
    assert d.mask.shape == (1, R, R) and d.mask.dtype == torch.float32
    assert d.mask.eq(expect).all() and torch.isfinite(d.scores).all()
    assert d.superpixels.min() == 1 and d.superpixels.max() == d.scores.shape[0]


def test_constant_image_slic():
    d = segment(torch.zeros(3, R, R), torch.zeros(3, R, R), [torch.full((1, 8, 8), 0.1)],
                config=SegmentConfig(n_segments=10))
    assert d.mask.eq(1).all() and set(d.mask.unique().tolist()) <= {0.0, 1.0}


def test_errors():
    with pytest.raises(ShapeError):
        segment(torch.zeros(1, 3, R, R), image(), [quad_map([0] * 4)])
    with pytest.raises(ShapeError):
        segment(image(), torch.zeros(3, 16, 16), [quad_map([0] * 4)])
    with pytest.raises(ShapeError):
        segment(image(), image(), [], labels=quadrants())
    with pytest.raises(ShapeError):
        segment(image(), image(), [torch.zeros(8, 8)], labels=quadrants())
    with pytest.raises(ShapeError):  # parsing of another size
        segment(image(), image(), [quad_map([0] * 4)], parsing=FakeParsing(torch.zeros(4, 16, 16)), labels=quadrants())
    with pytest.raises(ConfigError):
        segment(image(), image(), [quad_map([0] * 4)], parsing=object(), labels=quadrants())
    with pytest.raises(ConfigError):
        SegmentConfig(tiny_superpixel="drop")
    with pytest.raises(ConfigError):
        SegmentConfig(theta=float("nan"))


def test_reference_config():
    c = SegmentConfig.reference()
    assert (c.slic_bgr, c.tiny_superpixel) == (True, "reference")
    # The reference's SLIC reads the file: the preset's uint8 conversion must give back its bytes exactly.
    from dhr.segmentation.superpixels import to_uint8

    levels = torch.arange(256, dtype=torch.float32).expand(3, 2, 256) / 127.5 - 1
    assert np.array_equal(to_uint8(levels, truncate=c.uint8_truncate)[0, :, 0], np.arange(256))
    got = (c.theta_skin, c.theta_inner, c.theta_other, c.n_segments, c.compactness, c.sigma)
    assert got == (0.7, 0.8, 0.6, 200, 30.0, 1.0)


def test_save_domain_pngs(tmp_path):
    target = torch.rand(3, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1
    d = segment(target, target, [quad_map([0.1, 0.9, 0.1, 0.9]), quad_map([0.0, 0.1, 0.2, 0.3], size=8)],
                parsing=parsing_of([0, 1, 2, 3]), config=SegmentConfig(n_segments=16))
    paths = save_domain_pngs(d, tmp_path / "out", "img", target=target)
    assert set(paths) == {"error", "superpixels", "parsing", "mask_superpixel", "mask_parsing", "mask"}
    for name, p in paths.items():
        assert p.name == f"img_{name}.png"
        arr = np.array(Image.open(p))
        assert arr.shape[:2] == ((256, 256) if name == "superpixels" else (R, R))
    # Superpixels: the face enlarged 8x with one-pixel yellow boundaries (not 8-pixel blocks).
    sp = np.array(Image.open(paths["superpixels"])).astype(int)
    yellow = (sp[..., 0] == 255) & (sp[..., 1] == 230) & (sp[..., 2] == 0)
    assert 0.005 < yellow.mean() < 0.08, yellow.mean()  # 8-pixel-wide blocks would cover ~4x more
    mask = np.array(Image.open(paths["mask"]))
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, d.mask[0].numpy() > 0.5)
    parsing = np.array(Image.open(paths["parsing"]))
    assert len({tuple(c) for c in parsing.reshape(-1, 3)}) == 4
    err = np.array(Image.open(paths["error"]))
    assert err.shape == (R, R, 3) and err.reshape(-1, 3).max() > err.reshape(-1, 3).min()


def test_real_parsing_result_farl_reference_rules():
    """With dhr.faces.parsing.ParsingResult (FaRL's 19 classes): face 0.7, nose 0.8, hair 0.6, hat forced OOD."""
    from dhr.faces.parsing import FARL_LABELS, ParsingResult

    names = FARL_LABELS.classes
    probs = torch.full((19, R, R), 0.01)
    for q, name in enumerate(("face", "nose", "hair", "hat")):
        probs[names.index(name)][quadrants() == q + 1] = 0.82
    result = ParsingResult(probabilities=probs, labels=FARL_LABELS)
    assert isinstance(result, ParsingLike)
    d = run([quad_map([0.75, 0.75, 0.65, 0.1])], result)
    assert quad_values(d.mask_superpixel) == [0.0, 1.0, 0.0, 1.0]
    assert quad_values(d.mask_parsing) == [1.0, 1.0, 1.0, 0.0]
    assert quad_values(d.mask) == [0.0, 1.0, 0.0, 0.0]
    assert d.parsing.shape == (19, R, R)


def test_min_region_drops_specks_and_keeps_large_regions():
    cfg = dict(theta=0.7)
    # Top-left quadrant (1/4 of the image, minus the speck) stays out; a speck alone is put back in.
    lab2 = quadrants()
    lab2[20, 20] = 5  # speck inside the bottom-right (in-domain) quadrant
    m = quad_map([0.9, 0.1, 0.1, 0.1])
    m[0, 20, 20] = 5.0
    d = segment(image(), image(), [m], config=SegmentConfig(min_region=0.02, **cfg), labels=lab2)
    assert d.mask[0, 20, 20] == 1.0 and quad_values(d.mask) == [0.0, 1.0, 1.0, 1.0]
    assert d.mask_superpixel[0, 20, 20] == 0.0  # m_s itself is unchanged; only the final m is cleaned
    d = segment(image(), image(), [m], config=SegmentConfig(min_region=0.0, **cfg), labels=lab2)
    assert d.mask[0, 20, 20] == 0.0  # off (the reference): the speck stays out of domain
    d = segment(image(), image(), [m], config=SegmentConfig(min_region=0.3, **cfg), labels=lab2)
    assert d.mask.eq(1).all()  # a quarter of the image is below 30 %: everything back in domain
    with pytest.raises(ConfigError, match="min_region"):
        SegmentConfig(min_region=1.5)
