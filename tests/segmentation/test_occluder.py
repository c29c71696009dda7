"""Tests of the learned occluder cue: the network, its loader and the test m_o inside segment()."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dhr.errors import ConfigError, ShapeError
from dhr.models.native import save_pretrained
from dhr.segmentation.domain import SegmentConfig, occluder_test, save_domain_pngs, segment
from dhr.segmentation.occluder import (
    OccluderNet,
    OccluderNetConfig,
    load_occluder_net,
    occluder_probability,
    register_occluder_component,
)

R = 16


def constant_net(logit: float) -> OccluderNet:
    """A tiny network whose output is ``logit`` everywhere (all weights zero, head bias = logit)."""
    net = OccluderNet(OccluderNetConfig(channels=(2, 2, 2, 2)))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.head.bias.fill_(logit)
    return net


def saved(net: OccluderNet, folder) -> str:
    register_occluder_component()
    save_pretrained(net, folder)
    return str(folder)


def halves() -> torch.Tensor:
    """``(R, R)`` labels: 1 on the left half, 2 on the right half."""
    lab = torch.ones(R, R, dtype=torch.int64)
    lab[:, R // 2:] = 2
    return lab


def test_net_shapes_and_checks():
    net = OccluderNet(OccluderNetConfig(channels=(4, 4, 4, 4)))
    assert net(torch.zeros(2, 3, R, R)).shape == (2, 1, R, R)
    with pytest.raises(ConfigError, match="divisible by 8"):
        net(torch.zeros(1, 3, 12, 12))
    with pytest.raises(ShapeError):
        net(torch.zeros(1, 4, R, R))
    with pytest.raises(ConfigError, match="four positive widths"):
        OccluderNetConfig(channels=(4, 4))


def test_coordinate_channels():
    torch.manual_seed(0)
    net = OccluderNet(OccluderNetConfig(channels=(4, 4, 4, 4), coords=True))
    assert net.stem[0].in_channels == 5
    with torch.no_grad():
        net.stem[0].weight[:, :3].zero_()  # the network sees only the coordinates
    out = net(torch.rand(1, 3, R, R) * 2 - 1).detach()
    assert float(out.std()) > 0  # a spatial prior
    assert OccluderNet(OccluderNetConfig(channels=(4, 4, 4, 4), coords=False)).stem[0].in_channels == 3


def test_occluder_test_averages_over_superpixels():
    prob = torch.zeros(R, R)
    prob[:, :R // 2] = 0.9          # left superpixel: occluder
    prob[0, R // 2:] = 0.9          # right superpixel: a few confident pixels, mean far below 0.5
    m = occluder_test(prob, 0.5, halves())
    assert m.shape == (1, R, R)
    assert float(m[0, :, :R // 2].max()) == 0.0  # out of domain
    assert float(m[0, :, R // 2:].min()) == 1.0  # in domain despite its first row
    per_pixel = occluder_test(prob, 0.5)
    assert float(per_pixel[0, 0, R - 1]) == 0.0 and float(per_pixel[0, 1, R - 1]) == 1.0


def test_occluder_test_checks_shapes():
    with pytest.raises(ShapeError):
        occluder_test(torch.zeros(1, R, R), 0.5)
    with pytest.raises(ShapeError):
        occluder_test(torch.zeros(R, R), 0.5, torch.ones(R, R + 1, dtype=torch.int64))


def _inputs():
    target = torch.zeros(3, R, R)
    coarse = torch.zeros(3, R, R)
    maps = [torch.zeros(1, R, R)]  # no reconstruction error anywhere: the error test keeps everything
    return target, coarse, maps


def test_segment_uses_the_occluder_cue(tmp_path):
    target, coarse, maps = _inputs()
    on = saved(constant_net(6.0), tmp_path / "on")     # p ~ 1 everywhere
    off = saved(constant_net(-6.0), tmp_path / "off")  # p ~ 0 everywhere
    base = SegmentConfig(theta=0.5)
    plain = segment(target, coarse, maps, config=base, labels=halves())
    assert float(plain.mask.min()) == 1.0 and plain.mask_occluder is None and plain.occluder is None
    hit = segment(target, coarse, maps, config=dataclasses.replace(base, occluder=on), labels=halves())
    assert float(hit.mask.max()) == 0.0  # everything marked out of domain by the cue
    assert hit.mask_occluder is not None and float(hit.occluder.min()) > 0.99
    miss = segment(target, coarse, maps, config=dataclasses.replace(base, occluder=off), labels=halves())
    assert torch.equal(miss.mask, plain.mask)
    # The threshold decides: p ~ 0.998 stays in domain under a threshold of 1.
    high = dataclasses.replace(base, occluder=on, occluder_threshold=1.0)
    assert float(segment(target, coarse, maps, config=high, labels=halves()).mask.min()) == 1.0


def test_segment_keeps_error_test_out_of_domain(tmp_path):
    """m = m_s · m_o: the cue only adds out-of-domain regions, it never takes the error test's back."""
    target, coarse, _ = _inputs()
    err = torch.zeros(1, R, R)
    err[:, :, :R // 2] = 5.0
    cfg = SegmentConfig(theta=0.5, occluder=saved(constant_net(-6.0), tmp_path / "off"))
    dom = segment(target, coarse, [err], config=cfg, labels=halves())
    assert float(dom.mask[0, :, :R // 2].max()) == 0.0 and float(dom.mask[0, :, R // 2:].min()) == 1.0


def test_config_and_loader_errors(tmp_path):
    with pytest.raises(ConfigError, match="occluder_threshold"):
        SegmentConfig(occluder_threshold=0.0)
    with pytest.raises(ConfigError, match="occluder"):
        SegmentConfig(occluder="")
    with pytest.raises(ConfigError, match="segment.occluder"):
        load_occluder_net(tmp_path / "nothing")
    target, coarse, maps = _inputs()
    with pytest.raises(ConfigError, match="segment.occluder"):
        segment(target, coarse, maps, config=SegmentConfig(occluder=str(tmp_path / "nothing")))


def test_loader_round_trip_and_cache(tmp_path):
    net = constant_net(2.0)
    folder = saved(net, tmp_path / "net")
    a = load_occluder_net(folder)
    assert a is load_occluder_net(folder)  # cached
    p = occluder_probability(a, torch.zeros(3, R, R))
    assert p.shape == (R, R) and torch.allclose(p, torch.full((R, R), torch.sigmoid(torch.tensor(2.0)).item()))


def test_pngs_include_the_cue(tmp_path):
    target, coarse, maps = _inputs()
    cfg = SegmentConfig(theta=0.5, occluder=saved(constant_net(6.0), tmp_path / "on"))
    dom = segment(target, coarse, maps, config=cfg, labels=halves())
    out = save_domain_pngs(dom, tmp_path / "png", "x", target=target)
    assert {"occluder", "mask_occluder"} <= set(out) and all(p.is_file() for p in out.values())


def test_model_json_path_is_resolved_inside_the_model_folder(tmp_path):
    from dhr.errors import CheckpointError
    from dhr.models.zoo import FaceModel

    saved(constant_net(0.0), tmp_path / "occluder")
    model = FaceModel(name="t", path=tmp_path, generator=None,
                      manifest={"config": {"segment": {"occluder": "occluder", "occluder_threshold": 0.7}}})
    seg = model.recommended_config().segment
    assert seg.occluder == str((tmp_path / "occluder").resolve()) and seg.occluder_threshold == 0.7
    outside = FaceModel(name="t", path=tmp_path, generator=None, manifest={"config": {"segment": {"occluder": "../x"}}})
    with pytest.raises(ConfigError, match="outside the model folder"):
        outside.recommended_config()
    missing = FaceModel(name="t", path=tmp_path, generator=None, manifest={"config": {"segment": {"occluder": "nope"}}})
    with pytest.raises(CheckpointError, match="missing"):
        missing.recommended_config()


def test_probability_follows_the_image_device():
    net = constant_net(0.0)
    p = occluder_probability(net, torch.zeros(3, R, R, device="meta"))
    assert p.device.type == "meta" and p.shape == (R, R)
    assert next(net.parameters()).device.type == "cpu"  # the caller's network is not moved
