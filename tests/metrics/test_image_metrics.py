"""MSE, PSNR, SSIM and masked variants on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhr.errors import ShapeError
from dhr.metrics.image import (
    gaussian_window,
    masked_lpips,
    mse,
    psnr,
    psnr_from_mse,
    ssim,
    ssim_map,
)


def _rand(seed: int, shape=(2, 3, 24, 24)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def test_mse_of_known_offset_and_psnr_variants():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.1  # MSE = 0.01 exactly (up to float)
    assert torch.allclose(mse(x, y), torch.full((2,), 0.01), atol=1e-7)
    assert torch.allclose(psnr(x, y), torch.full((2,), 10 * math.log10(4 / 0.01)), atol=1e-4)  # 26.02 dB
    assert torch.allclose(psnr(x, y, variant="reference"), torch.full((2,), 10 * math.log10(2 / 0.01)), atol=1e-4)
    # The correct [-1, 1] PSNR equals the PSNR of the same images in [0, 1] with peak 1.
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    assert abs(psnr(x, y)[0].item() - 10 * math.log10(1 / ((x01 - y01) ** 2).mean().item())) < 1e-3
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_from_mse_rejects_unknown_variant():
    with pytest.raises(ValueError):
        psnr_from_mse(torch.tensor([0.1]), "bogus")  # type: ignore[arg-type]


def test_masked_mse_counts_only_the_masked_pixels():
    x = torch.zeros(1, 3, 4, 4)
    y = torch.zeros(1, 3, 4, 4)
    y[..., :2, :] = 1.0  # top half differs by 1
    top = torch.zeros(1, 1, 4, 4)
    top[..., :2, :] = 1
    assert mse(x, y, mask=top).item() == pytest.approx(1.0)
    assert mse(x, y, mask=1 - top).item() == pytest.approx(0.0)
    assert mse(x, y).item() == pytest.approx(0.5)
    # (H, W) and (1, H, W) masks broadcast; an empty mask gives NaN, not a number.
    assert mse(x, y, mask=top[0, 0]).item() == pytest.approx(1.0)
    assert math.isnan(mse(x, y, mask=torch.zeros(4, 4)).item())


def test_mask_shape_and_range_are_checked():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ShapeError):
        mse(x, x, mask=torch.ones(1, 1, 5, 5))
    with pytest.raises(ShapeError):
        mse(x, x, mask=torch.full((1, 1, 4, 4), 2.0))
    with pytest.raises(ShapeError):
        mse(x, torch.zeros(1, 3, 4, 5))


def test_ssim_identity_and_bounds():
    x = _rand(0)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    y = _rand(1)
    s = ssim(x, y)
    assert (s < 0.2).all() and (s > -1).all()
    # Masked with a full mask equals unmasked.
    assert torch.allclose(ssim(x, y, mask=torch.ones(2, 1, 24, 24)), s, atol=1e-6)
    # Noise lowers SSIM monotonically.
    noisy = [ssim(x, (x + a * _rand(2)).clamp(-1, 1)).mean().item() for a in (0.05, 0.2, 0.5)]
    assert noisy[0] > noisy[1] > noisy[2]


def test_ssim_matches_scikit_image_away_from_the_border():
    skm = pytest.importorskip("skimage.metrics")
    x = _rand(3, (1, 3, 40, 40)).double()
    y = (x + 0.3 * _rand(4, (1, 3, 40, 40)).double()).clamp(-1, 1)
    ref = skm.structural_similarity(x[0].numpy(), y[0].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=2.0)
    interior = ssim_map(x, y)[..., 5:-5, 5:-5].mean().item()
    assert interior == pytest.approx(ref, abs=1e-9)


def test_masked_ssim_localises_damage():
    x = _rand(5, (1, 3, 32, 32))
    y = x.clone()
    y[..., :, 16:] = _rand(6, (1, 3, 32, 16))  # right half replaced
    left = torch.zeros(1, 1, 32, 32)
    left[..., :, :8] = 1  # far from the seam (window radius 5)
    right = torch.zeros(1, 1, 32, 32)
    right[..., :, 24:] = 1
    assert ssim(x, y, mask=left).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, y, mask=right).item() < 0.3


def test_gaussian_window():
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,) and g.sum().item() == pytest.approx(1.0) and int(g.argmax()) == 5
    with pytest.raises(ShapeError):
        gaussian_window(10, 1.5)


class _L2Perceptual(torch.nn.Module):
    """Squared difference as a 'perceptual' map: known spatial values."""

    def forward(self, x, y):
        return (x - y).square().mean(dim=[1, 2, 3])

    def spatial(self, x, y):
        return (x - y).square().mean(dim=1, keepdim=True)


def test_masked_lpips_uses_the_spatial_map():
    p = _L2Perceptual()
    x = torch.zeros(1, 3, 4, 4)
    y = torch.zeros(1, 3, 4, 4)
    y[..., 0, 0] = 2.0
    m = torch.zeros(1, 1, 4, 4)
    m[..., 0, :] = 1
    assert masked_lpips(p, x, y).item() == pytest.approx(4.0 / 16)
    assert masked_lpips(p, x, y, mask=m).item() == pytest.approx(4.0 / 4)
    assert masked_lpips(p, x, y, mask=1 - m).item() == pytest.approx(0.0)


def test_psnr_is_per_image():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1] += 0.2
    out = psnr(x, y)
    assert math.isinf(out[0].item()) and np.isfinite(out[1].item())
