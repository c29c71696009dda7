"""BiSeNet face parser in the key layout of zllrunning/face-parsing.PyTorch (``79999_iter.pth``).

Trained on CelebAMask-HQ with 19 labels (:data:`BISENET_CLASSES`; note this order differs from
FaRL's, :data:`dhr.models.farl.FARL_CELEBM_CLASSES`). The backbone is a ResNet-18 without its
classifier; the spatial path of the original BiSeNet is replaced by the ResNet 1/8 features.
Building the model downloads nothing: load the released file with :meth:`BiSeNet.from_checkpoint`.

Key groups::

    cp.resnet.{conv1, bn1, layer1..4.{0,1}.{conv1, bn1, conv2, bn2, downsample.{0,1}}}
    cp.arm16, cp.arm32        .{conv.conv, conv.bn, conv_atten, bn_atten}    (attention refinement)
    cp.conv_head16/32, cp.conv_avg  .{conv, bn}                               (conv-BN-ReLU)
    ffm.{convblk.conv, convblk.bn, conv1, conv2}                              (feature fusion)
    conv_out, conv_out16, conv_out32  .{conv.conv, conv.bn, conv_out}         (heads, 19 classes)

``downsample`` exists on ``layer2.0``, ``layer3.0`` and ``layer4.0`` only. Used by SAM; DHR uses FaRL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_shape
from dhr.models.encoders.irse import build_empty, load_state_dict_strict, read_checkpoint

__all__ = ["BISENET_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "BiSeNet"]

#: Label order of ``79999_iter.pth`` (index -> CelebAMask-HQ part name; ``l_``/``r_`` as annotated).
BISENET_CLASSES: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """``relu(bn(conv(x)))`` with a bias-free conv (keys ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; ``downsample`` (1x1 conv + BN) only when channels or stride change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + res)


class ResNet18Features(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps (128, 256, 512 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinement(nn.Module):
    """``f * sigmoid(bn_atten(conv_atten(mean_hw(f))))`` with ``f = conv(x)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet trunk plus the global-context / attention-refinement top-down path."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        ctx = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(f32) + ctx, size=f16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(f16) + up32, size=f8.shape[-2:], mode="nearest")
        up16 = self.conv_head16(up16)
        return f8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenate, conv-BN-ReLU, then add a channel-attention-weighted copy: ``f + f * a``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, 1)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([a, b], dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat + feat * att


class OutputHead(nn.Module):
    """Conv-BN-ReLU then a bias-free 1x1 classifier (keys ``conv.conv``, ``conv.bn``, ``conv_out``)."""

    def __init__(self, in_channels: int, mid_channels: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels, 3)
        self.conv_out = nn.Conv2d(mid_channels, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet face parser (zllrunning layout).

    Args:
        n_classes: Number of labels (19 for ``79999_iter.pth``, order :data:`BISENET_CLASSES`).

    Shapes:
        ``forward``: ``(B, 3, H, W)`` ImageNet-normalised RGB (trained at 512x512; H, W multiples of 32
        work best) -> ``(B, n_classes, H, W)`` logits, bilinearly resized (align_corners=True).
        The auxiliary heads ``conv_out16`` / ``conv_out32`` are only used in training and by
        :meth:`forward_all`.
    """

    def __init__(self, n_classes: int = 19) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Main and both auxiliary logits, each ``(B, n_classes, H, W)``."""
        check_shape(x, ["B", 3, "H", "W"], "x")
        size = x.shape[-2:]
        f8, c8, c16 = self.cp(x)
        main, aux16, aux32 = (
            F.interpolate(o, size=size, mode="bilinear", align_corners=True)
            for o in (self.conv_out(self.ffm(f8, c8)), self.conv_out16(c8), self.conv_out32(c16))
        )
        return main, aux16, aux32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes, H, W)`` for ImageNet-normalised ``x`` ``(B, 3, H, W)``."""
        check_shape(x, ["B", 3, "H", "W"], "x")
        size = x.shape[-2:]
        f8, c8, _ = self.cp(x)
        return F.interpolate(self.conv_out(self.ffm(f8, c8)), size=size, mode="bilinear", align_corners=True)

    def parse(self, images: torch.Tensor, *, size: int = 512) -> torch.Tensor:
        """Parses images in the dhr convention, as the original test script does.

        The images are resized to ``size`` x ``size`` (bilinear, antialiased), ImageNet-normalised,
        parsed, and the logits resized back to the input size.

        Args:
            images: ``(B, 3, H, W)`` RGB in [-1, 1].
            size: Working resolution (the model was trained at 512).

        Returns:
            ``(B, n_classes, H, W)`` logits (softmax over dim 1 for probabilities).
        """
        check_shape(images, ["B", 3, "H", "W"], "images")
        h, w = images.shape[-2:]
        x = (images + 1) / 2
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        logits = self((x - mean) / std)
        if (h, w) != (size, size):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits

    @classmethod
    def from_checkpoint(cls, path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> BiSeNet:
        """Loads ``79999_iter.pth`` (or its state dict) strictly; returns a frozen eval-mode model on CPU.

        Raises:
            CheckpointError: If the file cannot be read or does not have this layout.
        """
        state = read_checkpoint(path_or_state)
        n_classes = 19
        head = state.get("conv_out.conv_out.weight")
        if isinstance(head, torch.Tensor) and head.ndim == 4:
            n_classes = int(head.shape[0])
        model = build_empty(cls, n_classes)
        source = "the given state dict" if isinstance(path_or_state, Mapping) else str(path_or_state)
        load_state_dict_strict(model, state, source=source)
        return model.eval().requires_grad_(False)
