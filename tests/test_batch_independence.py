"""A photo's result does not depend on the batch it is inverted in: alone, in any batch, at any position.

Every random draw is per image (a stream seeded from the run seed and the image's content key), and
by default the images of a batch are optimised one after the other. Each method is checked with a
permuted batch on a tiny random model (noise maps switched on, so the optimised noise and the latent
noise both matter), and DHR once on the bundled ``faces-64`` model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhr.config import InvertConfig
from dhr.engine import invert
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.seeding import image_generator, image_key

TOL = 1e-4


class TinyEncoder(nn.Module):
    def __init__(self, num_ws: int, dim: int) -> None:
        super().__init__()
        self.num_ws, self.dim = num_ws, dim
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, num_ws * dim)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 8).flatten(1)
        return self.fc(x).reshape(-1, self.num_ws, self.dim)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)).eval()
    with torch.no_grad():
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.1)
        G.w_avg.copy_(G.mean_latent(64, generator=torch.Generator().manual_seed(1)))
        z = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
        images = G(G.mapping(z), noise_mode="random").clamp(-1, 1)
    images[1, :, 4:14, 6:20] = torch.tensor([0.9, -0.8, 0.1])[:, None, None]  # an occluder
    images[3] = images[3].flip(-1)
    lp = LPIPS("squeeze")
    enc = TinyEncoder(G.num_ws, 32)
    return G, lp, enc, images


def _cfg(method, embed=None):
    return InvertConfig.from_dict({
        "method": method,
        "embed": embed,
        "optim": {"steps": 3, "n_mean_samples": 64, "loss_resolution": 32, "init": "mean"},
        "coarse": {"steps": 3, "n_mean_samples": 64, "loss_resolution": 32, "noise": 0.5},
        "segment": {"n_segments": 12},
        "refine": {"steps": 4, "weight_steps": 2},
        "pti": {"steps": 3},
    })


def _check(a, b):
    assert (a.image - b.image).abs().max() <= TOL
    assert (a.ws - b.ws).abs().max() <= TOL
    assert a.meta["image_key"] == b.meta["image_key"]
    for name in set(a.weight_delta) | set(b.weight_delta):
        assert (a.weight_delta[name] - b.weight_delta[name]).abs().max() <= TOL
    if a.feature is not None:
        assert (a.feature - b.feature).abs().max() <= TOL
    if a.domain is not None:
        assert torch.equal(a.domain.mask, b.domain.mask)


CASES = [("dhr", "encoder"), ("dhr", "optim"), ("pti", "encoder"), ("pti", "optim"), ("feature", "encoder"),
         ("encoder", None), ("optim", None)]


@pytest.mark.parametrize(("method", "embed"), CASES, ids=[f"{m}-{e}" for m, e in CASES])
def test_permuted_batch_equals_alone(setup, method, embed):
    G, lp, enc, images = setup
    kw = dict(config=_cfg(method, embed), perceptual=lp, encoder=None if embed == "optim" or method == "optim" else enc)
    full = invert(G, images, **kw)
    perm = [3, 1, 0, 2]
    permuted = invert(G, images[perm], **kw)
    alone = invert(G, images[2:3], **kw)
    for k, i in enumerate(perm):
        _check(permuted[k], full[i])
    _check(alone[0], full[2])
    sub = invert(G, images[[2, 1]], **kw)  # another batch size, another position
    _check(sub[0], full[2])
    _check(sub[1], full[1])


def test_batch_equals_alone_with_segmentations_in_threads(setup):
    # with 2 torch threads a batch's segmentations run in 2 Python threads (dhr.engine.for_each_image)
    G, lp, enc, images = setup
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kw = dict(config=_cfg("dhr", "optim"), perceptual=lp)
        full = invert(G, images, **kw)
        for i in (0, 1, 3):
            _check(invert(G, images[i:i + 1], **kw)[0], full[i])
    finally:
        torch.set_num_threads(before)


def test_user_masks_batch_independent(setup):
    G, lp, enc, images = setup
    masks = torch.zeros(4, 1, 32, 32)
    masks[:, :, 2:30, 3:29] = 1
    masks[1, :, 4:14, 6:20] = 0
    kw = dict(config=_cfg("dhr", "encoder"), perceptual=lp, encoder=enc)
    full = invert(G, images, masks=masks, **kw)
    alone = invert(G, images[1:2], masks=masks[1:2], **kw)
    _check(alone[0], full[1])


def test_streams_follow_keys_not_positions(setup):
    G, lp, enc, images = setup
    assert image_key(images[0]) == image_key(images[0].clone())
    assert image_key(images[0]) != image_key(images[1])
    a = torch.randn(4, generator=image_generator(0, "k"))
    assert torch.equal(a, torch.randn(4, generator=image_generator(0, "k")))
    assert not torch.equal(a, torch.randn(4, generator=image_generator(1, "k")))
    assert not torch.equal(a, torch.randn(4, generator=image_generator(0, "k2")))
    kw = dict(config=_cfg("optim"), perceptual=lp)
    x = images[:2]
    same = invert(G, x, keys=["p", "q"], **kw)
    swapped = invert(G, x[[1, 0]], keys=["q", "p"], **kw)
    _check(same[0], swapped[1])
    assert same[0].meta["image_key"] == "p"
    other = invert(G, x[:1], keys=["r"], **kw)  # same pixels, another caller key: another stream
    assert (other[0].ws - same[0].ws).abs().max() > 1e-3


def test_bundled_model_batch_independent():
    """faces-64 with its recommended config (short budgets): three faces, one with an occluder, as a
    batch, permuted, and alone give the same masks and images."""
    import dhr

    pipe = dhr.Pipeline.from_pretrained("faces-64", device="cpu", config={
        "coarse": {"steps": 4}, "refine": {"steps": 6, "weight_steps": 3}, "segment": {"n_segments": 60}})
    G = pipe.generator
    with torch.no_grad():
        z = torch.randn(3, G.style_dim, generator=torch.Generator().manual_seed(7))
        x = G(G.mapping(z) * 0.7 + G.w_avg * 0.3, noise_mode="const").clamp(-1, 1)
    x[0, :, 36:56, 10:40] = torch.tensor([-0.9, 0.8, -0.6])[:, None, None]  # a hand-sized occluder
    cfg = pipe._config_for(None)
    kw = dict(config=cfg, perceptual=pipe.perceptual, encoder=pipe.model.encoder)
    full = invert(G, x, **kw)
    permuted = invert(G, x[[2, 0, 1]], **kw)
    alone = invert(G, x[1:2], **kw)
    for k, i in enumerate([2, 0, 1]):
        _check(permuted[k], full[i])
    _check(alone[0], full[1])
    assert float(full[0].domain.mask.mean()) < 1.0  # the occluder is out of domain
