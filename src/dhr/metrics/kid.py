"""Sample-quality metrics (KID, FID) on SqueezeNet-1.1 ImageNet features.

These are NOT the usual Inception-v3 figures (no Inception weights can be installed here):
features are the global-average-pooled outputs of SqueezeNet-1.1's last fire module (512-d),
computed on images resized to 224. Numbers are comparable between runs of this code only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["squeeze_features", "kid", "fid"]

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@torch.no_grad()
def squeeze_features(backbone: torch.nn.Module, images: Iterable[torch.Tensor], *, size: int = 224) -> np.ndarray:
    """512-d pooled features of batches of images ``(B, 3, H, W)`` in [-1, 1].

    Args:
        backbone: ``squeezenet1_1_features()`` with ImageNet weights (e.g. ``LPIPS("squeeze", ...).features``).
        images: Iterable of batches.
        size: Resize (bilinear, antialiased) before the backbone.
    """
    feats = []
    for x in images:
        x = (x.float().clamp(-1, 1) + 1) / 2
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = (x - _MEAN.to(x)) / _STD.to(x)
        feats.append(backbone(x).mean(dim=[2, 3]).double().cpu())
    return torch.cat(feats).numpy()


def kid(a: np.ndarray, b: np.ndarray, *, subsets: int = 100, subset_size: int = 300, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD² with the cubic polynomial kernel): (mean, std) over subsets."""
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
