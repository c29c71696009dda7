"""LPIPS (Zhang et al. 2018, v0.1) in pure PyTorch with AlexNet, VGG16 and SqueezeNet-1.1 backbones.

Backbones are written here in torchvision's ``features`` key layout, so torchvision ImageNet
checkpoints (or their ``features.*`` subset) load directly; the linear layers load from the
official v0.1 files (``lin{k}.model.1.weight``).

Inputs are RGB in [-1, 1]. ``LPIPS.forward`` returns the distance per image; ``layer_maps``
returns every layer's unreduced map at its native size (what DHR's superpixel scores and masked
losses need); ``spatial`` returns the sum of the maps upsampled to the input size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_choice, check_shape
from dhr.errors import CheckpointError, ConfigError, ShapeError
from dhr.models.ops import at_least_fp32, weighted_channel_sum

__all__ = ["LPIPS", "alexnet_features", "vgg16_features", "squeezenet1_1_features", "LPIPS_CHANNELS"]

Net = Literal["alex", "vgg", "squeeze"]

LPIPS_CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
    "squeeze": (64, 128, 256, 384, 384, 512, 512),
}
# End indices (exclusive) of the consecutive slices of `features` whose outputs are tapped.
_TAPS: dict[str, tuple[int, ...]] = {
    "alex": (2, 5, 8, 10, 12),
    "vgg": (4, 9, 16, 23, 30),
    "squeeze": (2, 5, 8, 10, 11, 12, 13),
}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1x1 -> [expand 1x1, expand 3x3] concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


def alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features`` layout."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision ``vgg16().features`` layout."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
            cin = int(v)
    return nn.Sequential(*layers)


def squeezenet1_1_features() -> nn.Sequential:
    """torchvision ``squeezenet1_1().features`` layout."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
    )


_BUILDERS = {"alex": alexnet_features, "vgg": vgg16_features, "squeeze": squeezenet1_1_features}
_REGISTRY_NAMES = {
    "alex": ("alexnet", "lpips-alex"),
    "vgg": ("vgg16", "lpips-vgg"),
    "squeeze": ("squeezenet1_1", "lpips-squeeze"),
}


def _read_state(src: str | Path | Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    if isinstance(src, Mapping):
        return dict(src)
    path = Path(src)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what} file not found: {path}") from None
    except Exception as e:  # corrupt zip / pickle / safetensors header
        raise CheckpointError(f"{what} file {path} could not be read ({type(e).__name__}: {e})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} file {path} does not hold a state dict")
    return dict(obj)


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{what}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{what}: '{k}' has shape {list(v.shape)}, expected {list(own[k].shape)}")
    module.load_state_dict({k: v.float() for k, v in state.items()})


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity.

    Args:
        net: Backbone, ``alex``, ``vgg`` or ``squeeze``.
        backbone: torchvision-layout ImageNet weights of the backbone (path or state dict; keys with or
            without the ``features.`` prefix; extra classifier keys are ignored). None leaves the
            backbone randomly initialised (tests only) unless ``from_registry`` is used.
        linear: LPIPS v0.1 linear layers (path or state dict with ``lin{k}.model.1.weight``), or None
            for all-ones weights (the "baseline" un-learned variant).
        eps: Added to the channel norm (1e-10 in the reference implementation).

    Example:
        >>> lp = LPIPS("squeeze", backbone="squeezenet1_1_features.safetensors", linear="v0.1/squeeze.pth")
        >>> d = lp(x, y)                  # (B,) for x, y of shape (B, 3, H, W) in [-1, 1]
        >>> maps = lp.layer_maps(x, y)    # list of (B, 1, h_l, w_l)
    """

    def __init__(self, net: Net = "alex", *, backbone: str | Path | Mapping | None = None,
                 linear: str | Path | Mapping | None = None, eps: float = 1e-10) -> None:
        super().__init__()
        check_choice(net, _BUILDERS, "net")
        self.net_name = net
        self.eps = eps
        self.features = _BUILDERS[net]()
        self.taps = _TAPS[net]
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.lins = nn.ParameterList(
            nn.Parameter(torch.ones(1, c, 1, 1), requires_grad=False) for c in LPIPS_CHANNELS[net]
        )
        if backbone is not None:
            state = _read_state(backbone, f"LPIPS {net} backbone")
            state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
            _load_strict(self.features, state, f"LPIPS {net} backbone ({backbone if not isinstance(backbone, Mapping) else 'state dict'})")
        if linear is not None:
            self.load_linear(linear)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_registry(cls, net: Net = "alex", **kwargs) -> LPIPS:
        """Builds LPIPS with backbone and linear weights resolved by :mod:`dhr.weights`."""
        from dhr import weights

        if net not in _REGISTRY_NAMES:
            raise ConfigError(f"LPIPS network {net!r} is unknown; choose one of {sorted(_REGISTRY_NAMES)}")
        bname, lname = _REGISTRY_NAMES[net]
        return cls(net, backbone=weights.resolve(bname, **kwargs), linear=weights.resolve(lname, **kwargs))

    def load_linear(self, linear: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Loads LPIPS v0.1 linear layers (``lin{k}.model.1.weight``, shape ``(1, C_k, 1, 1)``)."""
        state = _read_state(linear, f"LPIPS {self.net_name} linear layers")
        for k, p in enumerate(self.lins):
            key = next((c for c in (f"lin{k}.model.1.weight", f"{k}.1.weight", f"lins.{k}.model.1.weight") if c in state), None)
            if key is None:
                raise CheckpointError(f"LPIPS {self.net_name} linear layers: missing 'lin{k}.model.1.weight'")
            if tuple(state[key].shape) != tuple(p.shape):
                raise CheckpointError(
                    f"LPIPS {self.net_name} linear layers: '{key}' has shape {list(state[key].shape)}, expected {list(p.shape)} "
                    f"(is this the file of another backbone?)"
                )
            p.data.copy_(state[key].float())

    def taps_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised backbone features of ``x`` in [-1, 1], one per LPIPS layer."""
        x = (x - self.shift.to(x)) / self.scale.to(x)
        outs = []
        start = 0
        for end in self.taps:
            for layer in self.features[start:end]:
                x = layer(x)
            start = end
            tap = at_least_fp32(x)  # under bf16 autocast the backbone runs in bf16, the distance in fp32
            norm = torch.sqrt(tap.square().sum(dim=1, keepdim=True))
            outs.append(tap / (norm + self.eps))
        return outs

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer distance maps at native resolution.

        Args:
            x: ``(B, 3, H, W)`` in [-1, 1].
            y: ``(B, 3, H, W)`` in [-1, 1].

        Returns:
            One ``(B, 1, h_l, w_l)`` map per layer; the LPIPS distance is the sum of their spatial means.
        """
        b = check_shape(x, ["B", 3, "H", "W"], "x")
        check_shape(y, [b["B"], 3, b["H"], b["W"]], "y")
        if min(b["H"], b["W"]) < 16:
            raise ShapeError(f"LPIPS needs images of at least 16x16 pixels, got {b['H']}x{b['W']}")
        return self.layer_maps_from(x, self.taps_of(y))

    def layer_maps_from(self, x: torch.Tensor, y_taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`layer_maps` against precomputed ``y_taps = taps_of(y)`` (a fixed target's backbone
        runs once instead of every optimisation step); same values as ``layer_maps(x, y)``."""
        fx = self.taps_of(x)
        if len(y_taps) != len(fx):
            raise ShapeError(f"y_taps holds {len(y_taps)} tensors; this LPIPS has {len(fx)} layers")
        return [weighted_channel_sum((a - c.to(a)).square(), lin) for a, c, lin in zip(fx, y_taps, self.lins)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image, ``(B,)``."""
        return sum(m.mean(dim=[1, 2, 3]) for m in self.layer_maps(x, y))

    def spatial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the layer maps bilinearly upsampled to the input size, ``(B, 1, H, W)``."""
        size = x.shape[-2:]
        return sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in self.layer_maps(x, y))
