"""A learned occluder cue for DHR's segmentation: a tiny network that says where an object covers the face.

Why it exists (measured on faces-64, see ``docs/segmentation.md``): the coarse inversion's error is
the only appearance cue of the reference segmentation, and on a small model it fails on exactly the
occluders users bring. A patch of another face, a hand or skin-coloured glasses are partly drawn by
the generator itself, so their error stays below the threshold (objects cut from other faces scored
0.09-0.13 against 0.12-0.13 for the 90th percentile of the clean superpixels); lowering the threshold
then marks the hair and the background instead. A network that looks at the image itself sees the
seams, the misplaced parts and the foreign textures the error map misses.

:class:`OccluderNet` maps an aligned ``(B, 3, R, R)`` image in [-1, 1] to per-pixel logits that a pixel
belongs to an occluder. It is a small U-Net (0.41 M parameters): a full-resolution stem, three
stride-2 stages (the last one dilated, so its receptive field covers the whole 64 px crop) and a
decoder back to R / 2; the logits are upsampled bilinearly to R. Two coordinate channels tell it where
in the aligned crop a pixel lies (hair at the top is not an occluder; the same texture on the cheek
may be). :func:`dhr.segmentation.domain.segment` averages its probability over each SLIC superpixel,
so region boundaries come from the image, not from the network's coarse output.

It is trained by :mod:`dhr.train.occluder` on UTKFace *training* crops with synthetic occluders drawn
by :mod:`dhr.train.occluders`, a generator deliberately different from the benchmark's
(:mod:`dhr.bench.occlusion`), so that the benchmark measures generalisation. It is saved in the
native component format (``config.json`` + ``model.safetensors``, class ``OccluderNet``).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dhr.checks import check_shape
from dhr.errors import ConfigError

__all__ = ["OccluderNetConfig", "OccluderNet", "register_occluder_component", "load_occluder_net",
           "occluder_probability"]


@dataclass(frozen=True)
class OccluderNetConfig:
    """Architecture of :class:`OccluderNet`.

    Attributes:
        channels: Widths of the stem (full resolution) and of the three stride-2 stages.
        coords: Append two coordinate channels (x, y in [-1, 1]) to the input.
    """

    channels: tuple[int, ...] = (24, 32, 64, 96)
    coords: bool = True

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or any(int(c) < 1 for c in self.channels):
            raise ConfigError(f"OccluderNetConfig.channels={self.channels} must be four positive widths "
                              "(stem, 1/2, 1/4, 1/8 resolution), e.g. (24, 32, 64, 96)")

    def to_dict(self) -> dict:
        return {"channels": [int(c) for c in self.channels], "coords": bool(self.coords)}


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation), nn.LeakyReLU(0.2))


class OccluderNet(nn.Module):
    """Per-pixel occluder logits of an aligned face crop.

    Args:
        config: The architecture (:class:`OccluderNetConfig`).

    Inputs ``(B, 3, R, R)`` in [-1, 1] with R divisible by 8; output ``(B, 1, R, R)`` logits
    (sigmoid = probability that the pixel belongs to an occluder).
    """

    def __init__(self, config: OccluderNetConfig | None = None) -> None:
        super().__init__()
        config = OccluderNetConfig() if config is None else config
        self.config = dataclasses.replace(config, channels=tuple(int(c) for c in config.channels))
        c0, c1, c2, c3 = self.config.channels
        cin = 3 + (2 if self.config.coords else 0)
        self.stem = _block(cin, c0)
        self.down1 = nn.Sequential(_block(c0, c1, stride=2), _block(c1, c1))               # R/2
        self.down2 = nn.Sequential(_block(c1, c2, stride=2), _block(c2, c2))               # R/4
        self.down3 = nn.Sequential(_block(c2, c3, stride=2), _block(c3, c3, dilation=2),
                                   _block(c3, c3, dilation=4))                             # R/8
        self.up2 = _block(c3 + c2, c2)                                                     # R/4
        self.up1 = _block(c2 + c1, c1)                                                     # R/2
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, R, R)`` of ``x`` ``(B, 3, R, R)`` in [-1, 1]."""
        b = check_shape(x, ["B", 3, "R", "R"], "x")
        size = b["R"]
        if size % 8:
            raise ConfigError(f"OccluderNet needs a resolution divisible by 8, got {size}; resize the crop "
                              "(the bundled models are 64 px)")
        if self.config.coords:
            g = torch.linspace(-1.0, 1.0, size, device=x.device, dtype=x.dtype)
            yy, xx = torch.meshgrid(g, g, indexing="ij")
            x = torch.cat([x, xx.expand(x.shape[0], 1, size, size), yy.expand(x.shape[0], 1, size, size)], dim=1)
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        u2 = self.up2(torch.cat([F.interpolate(s3, size=s2.shape[-2:], mode="bilinear", align_corners=False), s2], 1))
        u1 = self.up1(torch.cat([F.interpolate(u2, size=s1.shape[-2:], mode="bilinear", align_corners=False), s1], 1))
        return F.interpolate(self.head(u1), size=(size, size), mode="bilinear", align_corners=False)


def register_occluder_component() -> None:
    """Makes :class:`OccluderNet` loadable with :func:`dhr.models.native.load_pretrained`."""
    from dhr.models.native import register_component

    register_component("OccluderNet", OccluderNet, OccluderNetConfig)


_CACHE: dict[tuple[str, float], OccluderNet] = {}
_MOVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # network -> {device: its copy there}
_LOCK = threading.Lock()


def load_occluder_net(folder: str | Path) -> OccluderNet:
    """Loads (once per folder and modification time) an occluder network saved in the native format.

    Args:
        folder: Folder with ``config.json`` and ``model.safetensors`` of class ``OccluderNet``
            (e.g. ``faces-64/occluder``; ``SegmentConfig.occluder``).

    Returns:
        The network in eval mode on the CPU, gradients off (move it with ``.to``; :func:`occluder_probability`
        does).

    Raises:
        ConfigError: If the folder does not exist.
        CheckpointError: If its files are missing, corrupt or of another class.
    """
    from dhr.models.native import CONFIG_NAME, load_pretrained

    path = Path(folder)
    if not (path / CONFIG_NAME).is_file():
        raise ConfigError(f"segment.occluder={str(folder)!r}: no occluder network there (expected {CONFIG_NAME} and "
                          "model.safetensors); train one with `python -m dhr.train.occluder` or unset segment.occluder")
    files = [path / CONFIG_NAME, path / "model.safetensors"]  # a replaced weights file is loaded afresh
    key = (str(path.resolve()), *((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files))
    with _LOCK:
        net = _CACHE.get(key)
        if net is None:
            register_occluder_component()
            net = load_pretrained(path, expected_class="OccluderNet").eval().requires_grad_(False)
            _CACHE[key] = net
    return net


@torch.no_grad()
def occluder_probability(net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Per-pixel probability that ``image`` shows an occluder there.

    Args:
        net: An :class:`OccluderNet` (any device; when it differs from ``image``'s, a copy on that device is
            made once and reused).
        image: ``(3, R, R)`` aligned crop in [-1, 1].

    Returns:
        ``(R, R)`` float32 probabilities on ``image``'s device.
    """
    check_shape(image, [3, "R", "R"], "image")
    if next(net.parameters()).device != image.device:
        with _LOCK:
            copies = _MOVED.setdefault(net, {})
            moved = copies.get(str(image.device))
            if moved is None:
                import copy

                moved = copies[str(image.device)] = copy.deepcopy(net).to(image.device)
        net = moved
    logits = net(image[None].to(torch.float32).clamp(-1.0, 1.0))
    return torch.sigmoid(logits)[0, 0]
