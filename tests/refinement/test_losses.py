from __future__ import annotations

import pytest
import torch

from dhr.errors import ShapeError
from dhr.metrics.lpips import LPIPS
from dhr.refinement.losses import masked_l2, masked_lpips, masked_mean, resize_mask


def test_masked_mean_matches_manual_and_is_per_image():
    x = torch.randn(2, 3, 5, 5)
    m = (torch.rand(2, 1, 5, 5) > 0.5).float()
    got = masked_mean(x, m)
    for i in range(2):
        want = (x[i] * m[i]).sum() / m[i].sum()
        assert torch.allclose(got[i], want, atol=1e-6)


def test_masked_mean_empty_mask_gives_zero_without_nan_gradient():
    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    m = torch.zeros(2, 1, 4, 4)
    m[1, :, :2] = 1
    out = masked_mean(x, m)
    assert out[0].item() == 0.0
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all()
    assert torch.count_nonzero(g[0]) == 0
    assert torch.count_nonzero(g[1]) == 8


def test_masked_l2_channel_sum_is_c_times_mean():
    x, y = torch.randn(1, 3, 6, 6), torch.randn(1, 3, 6, 6)
    m = torch.ones(1, 1, 6, 6)
    summed = masked_l2(x, y, m, channel_sum=True)
    mean = masked_l2(x, y, m, channel_sum=False)
    assert torch.allclose(mean, (x - y).square().mean(), atol=1e-6)
    assert torch.allclose(summed, 3 * mean, atol=1e-5)


def test_masked_l2_rejects_mismatched_shapes():
    with pytest.raises(ShapeError):
        masked_l2(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 5), torch.ones(1, 1, 4, 4))


def test_masked_lpips_with_ones_equals_lpips():
    torch.manual_seed(0)
    lp = LPIPS("squeeze")
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    maps = lp.layer_maps(x, y)
    got = masked_lpips(maps, torch.ones(2, 1, 8, 8))
    assert torch.allclose(got, lp(x, y), atol=1e-6)
    # complementary halves are finite and the empty side is 0
    assert masked_lpips(maps, torch.zeros(2, 1, 8, 8)).abs().max() == 0


def test_masked_lpips_uses_nearest_resized_mask_per_layer():
    maps = [torch.arange(16.0).reshape(1, 1, 4, 4), torch.arange(4.0).reshape(1, 1, 2, 2)]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1  # top half
    got = masked_lpips(maps, mask)
    want = maps[0][..., :2, :].mean() + maps[1][..., :1, :].mean()
    assert torch.allclose(got, want.reshape(1))
    assert resize_mask(mask, (4, 4)).shape == (1, 1, 4, 4)
