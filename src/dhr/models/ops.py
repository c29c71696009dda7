"""Pure-PyTorch reference ops of StyleGAN2 (no compiled extensions).

``upfirdn2d`` and the fused bias + leaky ReLU reproduce the CPU code path of the
de-facto implementation exactly; they run on any device and under autocast. The perceptual
networks' distance head (``at_least_fp32``, ``weighted_channel_sum``) keeps its arithmetic in
float32 under bfloat16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["make_kernel", "upfirdn2d", "bias_leaky_relu", "SQRT2", "at_least_fp32", "weighted_channel_sum"]

SQRT2 = math.sqrt(2.0)


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Returns the normalised 2-D outer-product FIR kernel of 1-D ``taps`` (sums to 1)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.ndim == 1 else k
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample.

    Args:
        x: ``(B, C, H, W)`` input.
        kernel: ``(kh, kw)`` filter, applied as a true convolution (flipped).
        up: Integer upsampling factor.
        down: Integer downsampling factor.
        pad: ``(before, after)`` padding applied on both axes after upsampling; negative crops.

    Returns:
        ``(B, C, H', W')`` with ``H' = (H * up + pad0 + pad1 - kh) // down + 1``.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[-2:]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    k = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    k = k[None, None].expand(c, 1, *k.shape)
    x = F.conv2d(x, k, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, slope: float = 0.2, gain: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias, slope) * gain`` with ``bias`` broadcast on dim 1."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.to(x.dtype).view(shape)
    return F.leaky_relu(x, slope) * gain


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is a 16-bit float (autocast's output), else unchanged (fp32, fp64)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def weighted_channel_sum(d: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """LPIPS's linear layer: ``(B, C, h, w)`` squared differences -> ``(B, 1, h, w)`` with the
    ``(1, C, 1, 1)`` weights, always in ``d``'s dtype (also under autocast: a loss stays fp32)."""
    with torch.autocast(d.device.type, enabled=False):
        return F.conv2d(d, weight.to(d))
