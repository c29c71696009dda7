"""StyleGAN2 discriminator in pure PyTorch (training only).

A residual discriminator with minibatch standard deviation, as in StyleGAN2's config F: fromRGB,
one block ``b{res}`` per resolution down to 8x8, then mbstd, a 3x3 conv, a fully connected layer
and the logit. Used by :mod:`dhr.train.gan`; inversion and editing never need it. It shares no
layer with the generator (:mod:`dhr.models.stylegan2`, which re-exports it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dhr.models.ops import bias_leaky_relu

__all__ = ["Discriminator", "DiscriminatorBlock", "DiscriminatorConfig", "EqualConv"]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Residual StyleGAN2 discriminator with minibatch-stddev (training only)."""

    resolution: int = 64
    channel_base: int = 4096
    channel_max: int = 256
    channel_multiplier: int = 1
    mbstd_group: int = 4

    def channels(self, resolution: int) -> int:
        """Channels of the feature maps at ``resolution``."""
        return max(1, min(self.channel_max, self.channel_base * self.channel_multiplier // resolution))

    def to_dict(self) -> dict:
        """The config as plain data (stored in checkpoints)."""
        return dataclasses.asdict(self)


class EqualConv(nn.Module):
    """Conv with equalised learning rate (weight scaled by ``1/sqrt(cin k k)`` at run time), optional
    bias and leaky-ReLU; ``(B, cin, H, W)`` -> ``(B, cout, H, W)`` (same padding)."""

    def __init__(self, cin: int, cout: int, k: int, *, bias: bool = True, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1 / math.sqrt(cin * k * k)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.gain, padding=self.weight.shape[-1] // 2)
        if self.activate:
            return bias_leaky_relu(x, self.bias)
        return x if self.bias is None else x + self.bias[None, :, None, None]


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs and a 1x1 skip, both halved by 2x2 average pooling, summed / sqrt(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqualConv(cin, cin, 3)
        self.conv1 = EqualConv(cin, cout, 3)
        self.skip = EqualConv(cin, cout, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) / math.sqrt(2)


class Discriminator(nn.Module):
    """Residual discriminator: fromRGB, blocks ``b{res}`` down to 4x4, mbstd, conv, fc, out."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        r = config.resolution
        self.fromrgb = EqualConv(3, config.channels(r), 1)
        self.block_resolutions = [2**i for i in range(int(math.log2(r)), 2, -1)]
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(config.channels(res), config.channels(res // 2)))
        c4 = config.channels(4)
        self.conv4 = EqualConv(c4 + 1, c4, 3)
        self.fc = EqualConv(c4 * 16, c4, 1)
        self.out = EqualConv(c4, 1, 1, activate=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Returns one logit per image ``(B,)`` for ``img (B, 3, R, R)`` in [-1, 1]."""
        x = self.fromrgb(img)
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        b, c, h, w = x.shape
        g = min(self.config.mbstd_group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # (B/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = self.conv4(torch.cat([x, y], 1))
        x = self.fc(x.reshape(b, -1, 1, 1))
        return self.out(x).reshape(b)
