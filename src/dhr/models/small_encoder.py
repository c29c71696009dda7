"""A small convolutional encoder from an aligned image to W+ (e4e-style: w0 plus per-layer deltas).

Used by the bundled model, where the IR-SE50 encoders of e4e / pSp would be far too heavy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_shape

__all__ = ["SmallEncoderConfig", "SmallEncoder"]


@dataclass(frozen=True)
class SmallEncoderConfig:
    """Architecture of :class:`SmallEncoder`.

    Attributes:
        resolution: Input size (power of two >= 16).
        num_ws: Number of W+ layers of the target generator.
        style_dim: Width of w.
        channels: Width of the first stage (doubled per downsampling, capped at ``channel_max``).
        channel_max: Maximum width.
    """

    resolution: int = 64
    num_ws: int = 10
    style_dim: int = 256
    channels: int = 32
    channel_max: int = 256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1, stride=2)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.conv0(F.leaky_relu(x, 0.2)), 0.2))
        return (y + self.skip(x)) / math.sqrt(2)


class SmallEncoder(nn.Module):
    """Image ``(B, 3, R, R)`` in [-1, 1] -> W+ offsets ``(B, num_ws, D)`` around the generator's ``w_avg``.

    The first layer predicts w0; layers 1.. predict w0 + delta_i (e4e's progressive structure with all
    stages active). Add ``w_avg`` (done by :meth:`forward` when given) to obtain codes.
    """

    def __init__(self, config: SmallEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        blocks = []
        res = config.resolution
        while res > 4:
            c2 = min(config.channel_max, c * 2)
            blocks.append(_ResBlock(c, c2))
            c, res = c2, res // 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c * 16, 512)
        self.w0 = nn.Linear(512, config.style_dim)
        self.deltas = nn.Linear(512, (config.num_ws - 1) * config.style_dim)
        nn.init.zeros_(self.deltas.weight), nn.init.zeros_(self.deltas.bias)

    def forward(self, x: torch.Tensor, w_avg: torch.Tensor | None = None) -> torch.Tensor:
        """Encodes ``x (B, 3, R, R)`` in [-1, 1] to ``(B, num_ws, D)`` (plus ``w_avg`` if given)."""
        cfg = self.config
        check_shape(x, ["B", 3, cfg.resolution, cfg.resolution], "x")
        h = self.blocks(self.stem(x))
        h = F.leaky_relu(self.fc(F.leaky_relu(h, 0.2).flatten(1)), 0.2)
        w0 = self.w0(h)[:, None]
        d = self.deltas(h).view(x.shape[0], cfg.num_ws - 1, cfg.style_dim)
        ws = torch.cat([w0, w0 + d], dim=1)
        return ws if w_avg is None else ws + w_avg.to(ws)
