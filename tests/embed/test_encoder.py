"""Tests of dhr.embed.encoder: SmallEncoder, adapters and generic encoders, resizing and rendering."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhr.embed.encoder import EncoderAdapter, encode, encoder_input_resolution
from dhr.errors import ShapeError
from dhr.models.small_encoder import SmallEncoder, SmallEncoderConfig
from dhr.models.stylegan2 import Generator
from tests.conftest import TINY


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    G.w_avg.copy_(torch.randn(TINY.style_dim))
    return G


def _target(b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


class Adapter:
    """An EncoderAdapter adding a latent average and recording its input."""

    def __init__(self, G: Generator, size: int) -> None:
        self.input_resolution = size
        self.G = G
        self.seen: list[tuple[int, ...]] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.G.w_avg.expand(x.shape[0], self.G.num_ws, -1) + x.mean(dim=(1, 2, 3))[:, None, None]


def test_small_encoder(G):
    torch.manual_seed(1)
    enc = SmallEncoder(SmallEncoderConfig(resolution=16, num_ws=G.num_ws, style_dim=TINY.style_dim, channels=8,
                                          channel_max=16)).eval()
    x = _target()
    emb = encode(enc, G, x)
    assert len(emb) == 2
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        ws = enc(small, G.w_avg)
        img = G(ws, noise_mode="const")
    for i, e in enumerate(emb):
        assert e.method == "encoder" and e.noise is None
        assert e.ws.shape == (G.num_ws, TINY.style_dim) and e.image.shape == (3, 32, 32)
        assert torch.allclose(e.ws, ws[i], atol=1e-5) and torch.allclose(e.image, img[i], atol=1e-5)
        assert not e.ws.requires_grad
    # default: one image at a time, so a code does not depend on its batch; vectorize: one call
    assert torch.equal(emb[1].ws, encode(enc, G, x[1:])[0].ws)
    vec = encode(enc, G, x, vectorize=True)
    assert all(torch.equal(v.ws, ws[i]) for i, v in enumerate(vec))


def test_adapter_gets_resized_input(G):
    ad = Adapter(G, 16)
    assert isinstance(ad, EncoderAdapter)
    x = _target()
    emb = encode(ad, G, x)
    assert ad.seen == [(1, 3, 16, 16)] * 2  # one image at a time
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    for i in range(2):
        assert torch.allclose(emb[i].ws, G.w_avg.expand(G.num_ws, -1) + small[i].mean(), atol=1e-6)
    ad2 = Adapter(G, 16)
    encode(ad2, G, _target(), input_resolution=32, vectorize=True)
    assert ad2.seen == [(2, 3, 32, 32)]


def test_generic_module_and_resolution_rules(G):
    class Plain(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], G.num_ws, TINY.style_dim)

    assert encoder_input_resolution(Plain(), 32) == 32
    from dhr.models.encoders.psp import LatentEncoder

    assert encoder_input_resolution(LatentEncoder.__new__(LatentEncoder), 1024) == 256  # official e4e/pSp: 256
    emb = encode(Plain(), G, _target(1))
    with torch.no_grad():
        assert torch.allclose(emb[0].image, G(torch.zeros(1, G.num_ws, TINY.style_dim))[0])


def test_errors(G):
    class Wrong(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], TINY.style_dim)

    with pytest.raises(ShapeError, match="encoder output"):
        encode(Wrong(), G, _target())
    with pytest.raises(ShapeError, match="16x16"):
        encode(Adapter(G, 16), G, _target(size=16))
    with pytest.raises(ShapeError):
        encode(Adapter(G, 16), G, torch.zeros(1, 4, 32, 32))
