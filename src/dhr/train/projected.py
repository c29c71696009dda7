"""Projected discriminator (Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021) on
frozen SqueezeNet-1.1 ImageNet features, for training the bundled model on a CPU budget.

The discriminator never sees pixels. An image is augmented (DiffAugment), resized to
``input_size`` and passed through the frozen ImageNet feature network; three of its feature maps
(strides 4, 8 and 16 of the resized input) are mixed by fixed random projections — cross-channel
(1x1 convolutions) and cross-scale (a top-down pyramid of 3x3 convolutions) — and one small
trainable discriminator per scale gives a map of logits. Only those per-scale heads are trained.

Why this helps here: the pretrained features already separate faces from non-faces and sharp
from blurred images, so the generator gets a useful signal from the first steps, while the
random projections keep the discriminator from focusing on a few feature channels.

The discriminator and its backbone are used for training only and are never shipped with a model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["ProjectedDiscriminator", "SQUEEZE_TAPS"]

# (end index into ``squeezenet1_1_features()``, channels): after fire3 (stride 4), fire5 (stride 8),
# fire9 (stride 16) of the resized input.
SQUEEZE_TAPS: tuple[tuple[int, int], ...] = ((5, 128), (8, 256), (13, 512))

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _head(cin: int, size: int, width: int) -> nn.Sequential:
    """Trainable per-scale discriminator: strided 4x4 convolutions down to <= 4 px, then a logit map."""
    layers: list[nn.Module] = []
    c = cin
    while size > 4:
        layers += [spectral_norm(nn.Conv2d(c, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
        c, size = width, (size + 2 - 4) // 2 + 1
        width = min(width * 2, 256)
    layers.append(spectral_norm(nn.Conv2d(c, 1, min(size, 4), 1, 0)))
    return nn.Sequential(*layers)


class ProjectedDiscriminator(nn.Module):
    """Multi-scale discriminator on fixed random projections of frozen backbone features.

    Args:
        backbone: ``squeezenet1_1_features()`` with ImageNet weights; frozen here (its
            parameters get ``requires_grad=False``; gradients still flow to the input image).
        input_size: Side the images are resized to before the backbone (bilinear).
        proj_channels: Channels of the cross-channel projection of each tap.
        head_width: First width of each per-scale head.
        seed: Seed of the fixed random projections (part of the training configuration).
    """

    def __init__(self, backbone: nn.Sequential, *, input_size: int = 128,
                 proj_channels: tuple[int, ...] = (64, 128, 256), head_width: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        g = torch.Generator().manual_seed(seed)
        sizes = self._tap_sizes(input_size)
        self.ccm = nn.ModuleList()
        self.csm = nn.ModuleList()
        for (_, cin), cout in zip(SQUEEZE_TAPS, proj_channels):
            conv = nn.Conv2d(cin, cout, 1)
            nn.init.kaiming_normal_(conv.weight, generator=g)
            nn.init.zeros_(conv.bias)
            self.ccm.append(conv)
        for i, cout in enumerate(proj_channels[:-1]):  # top-down mixing: deeper projection into this scale
            conv = nn.Conv2d(proj_channels[i + 1], cout, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, generator=g)
            nn.init.zeros_(conv.bias)
            self.csm.append(conv)
        self.ccm.requires_grad_(False)
        self.csm.requires_grad_(False)
        # Fixed per-scale feature scales, set once from the first batch seen (see ``features``), so the
        # heads start from unit-RMS inputs whatever the backbone's activation scale.
        self.register_buffer("scales", torch.zeros(len(SQUEEZE_TAPS)))
        self.heads = nn.ModuleList(_head(c, s, head_width) for c, s in zip(proj_channels, sizes))

    @staticmethod
    def _tap_sizes(input_size: int) -> list[int]:
        s = (input_size - 3) // 2 + 1  # conv 3x3 stride 2, no padding
        sizes = []
        for _ in SQUEEZE_TAPS:
            s = -(-(s - 3) // 2) + 1  # max-pool 3x3 stride 2, ceil mode
            sizes.append(s)
        return sizes

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters of the per-scale heads (everything else is fixed)."""
        return list(self.heads.parameters())

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Projected multi-scale features of ``img (B, 3, H, W)`` in [-1, 1] (already augmented)."""
        x = F.interpolate((img + 1) / 2, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False)
        x = (x - self.mean) / self.std
        taps, start = [], 0
        for end, _ in SQUEEZE_TAPS:
            for layer in self.backbone[start:end]:
                x = layer(x)
            taps.append(x)
            start = end
        proj = [ccm(t) for ccm, t in zip(self.ccm, taps)]
        out = [proj[-1]]
        for i in range(len(proj) - 2, -1, -1):
            up = F.interpolate(out[0], size=proj[i].shape[-2:], mode="bilinear", align_corners=False)
            out.insert(0, proj[i] + self.csm[i](up))
        if not bool(self.scales.all()):
            with torch.no_grad():
                self.scales.copy_(torch.stack([f.square().mean().rsqrt() for f in out]))
        return [f * s for f, s in zip(out, self.scales)]

    def forward(self, img: torch.Tensor, *, detach_features: bool = False) -> list[torch.Tensor]:
        """Logit maps, one per scale, each ``(B, 1, h, w)``, for ``img (B, 3, H, W)`` in [-1, 1].

        ``detach_features`` computes the fixed part without a graph (the discriminator's own step
        needs gradients for the heads only), which saves the backbone's backward pass.
        """
        if detach_features:
            with torch.no_grad():
                feats = self.features(img)
        else:
            feats = self.features(img)
        return [head(f) for head, f in zip(self.heads, feats)]


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss summed over scales: mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))


def hinge_g_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Generator loss summed over scales: -mean D(G(z))."""
    return sum(-f.mean() for f in fake_logits)
