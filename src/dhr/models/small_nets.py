"""Small networks of the bundled model: an attribute classifier and a distilled perceptual metric.

Both are trained by project code (:mod:`dhr.train.aux`) so that the default pipeline needs no
external file: ``TinyPerceptual`` is distilled from LPIPS-squeeze and exposes the same interface
as :class:`dhr.metrics.lpips.LPIPS` (``__call__``, ``layer_maps``, ``spatial``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_shape
from dhr.errors import ShapeError
from dhr.models.ops import at_least_fp32, weighted_channel_sum

__all__ = ["ClassifierConfig", "AttributeClassifier", "PerceptualConfig", "TinyPerceptual"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Attribute classifier: predicts age (years) and P(female) from an aligned crop."""

    resolution: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 192)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AttributeClassifier(nn.Module):
    """``(B, 3, R, R)`` in [-1, 1] -> ``{"age": (B,) years, "female_logit": (B,)}``."""

    ATTRIBUTES = ("age", "gender")

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, channels=tuple(config.channels))
        layers: list[nn.Module] = []
        cin = 3
        for c in self.config.channels:
            layers += [_conv_bn(cin, c, 1), _conv_bn(c, c, 2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_shape(x, ["B", 3, "H", "W"], "x")
        h = self.features(x).mean(dim=[2, 3])
        out = self.head(h)
        # Age is predicted in log space for a scale-free error on children and the elderly.
        return {"age": torch.expm1(out[:, 0].clamp(max=5.0) + 3.0).clamp(min=0.0), "log_age": out[:, 0] + 3.0,
                "female_logit": out[:, 1]}

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores used for editing metrics: ``age`` in years and ``gender`` = P(female) in [0, 1]."""
        o = self(x)
        return {"age": o["age"], "gender": torch.sigmoid(o["female_logit"])}


@dataclass(frozen=True)
class PerceptualConfig:
    """Distilled perceptual metric: ``channels`` per tap; each tap halves the resolution after the first."""

    channels: tuple[int, ...] = (32, 48, 64, 96)

    def to_dict(self) -> dict:
        return {"channels": list(self.channels)}


class TinyPerceptual(nn.Module):
    """An LPIPS-like metric: unit-normalised features of a small conv net, weighted squared differences.

    Same interface as :class:`dhr.metrics.lpips.LPIPS`: inputs ``(B, 3, H, W)`` in [-1, 1],
    ``forward -> (B,)``, ``layer_maps -> list[(B, 1, h_l, w_l)]``, ``spatial -> (B, 1, H, W)``.
    Parameters are frozen after training (:meth:`freeze`); gradients flow to the inputs.
    """

    def __init__(self, config: PerceptualConfig) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, channels=tuple(config.channels))
        stages = []
        cin = 3
        for i, c in enumerate(self.config.channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride, 1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2)))
            cin = c
        self.stages = nn.ModuleList(stages)
        # Linear weights are stored as logits of non-negative weights (softplus), as LPIPS clamps them >= 0.
        self.lin_logits = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in self.config.channels)

    def freeze(self) -> TinyPerceptual:
        self.requires_grad_(False)
        return self.eval()

    def taps_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            tap = at_least_fp32(x)  # under bf16 autocast: the stages in bf16, the distance in fp32
            outs.append(tap / (tap.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return outs

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        b = check_shape(x, ["B", 3, "H", "W"], "x")
        check_shape(y, [b["B"], 3, b["H"], b["W"]], "y")
        if min(b["H"], b["W"]) < 2 ** len(self.stages):
            raise ShapeError(f"TinyPerceptual needs images of at least {2 ** len(self.stages)} pixels")
        return self.layer_maps_from(x, self.taps_of(y))

    def layer_maps_from(self, x: torch.Tensor, y_taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`layer_maps` against precomputed ``y_taps = taps_of(y)`` (see ``LPIPS.layer_maps_from``)."""
        fx = self.taps_of(x)
        if len(y_taps) != len(fx):
            raise ShapeError(f"y_taps holds {len(y_taps)} tensors; this network has {len(fx)} layers")
        return [weighted_channel_sum((a - c.to(a)).square(), F.softplus(w)) for a, c, w in zip(fx, y_taps, self.lin_logits)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(m.mean(dim=[1, 2, 3]) for m in self.layer_maps(x, y))

    def spatial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in self.layer_maps(x, y))
