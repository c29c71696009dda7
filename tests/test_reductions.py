"""Tests of dhr.reductions.masked_mean, the one masked mean of the losses and the metrics."""

from __future__ import annotations

import math

import pytest
import torch

from dhr.errors import ConfigError, ShapeError
from dhr.reductions import masked_mean


def test_channel_choice_and_none_mask():
    x = torch.randn(2, 3, 4, 5)
    m = (torch.rand(2, 1, 4, 5) > 0.5).float()
    m[:, :, 0, 0] = 1  # never empty
    per_element = masked_mean(x, m, channels="mean")
    for i in range(2):
        want = (x[i] * m[i]).sum() / (3 * m[i].sum())
        assert torch.allclose(per_element[i], want, atol=1e-6)
    assert torch.allclose(masked_mean(x, m), 3 * per_element, atol=1e-5)  # "sum": the reference's L2
    assert torch.allclose(masked_mean(x, None, channels="mean"), x.flatten(1).mean(1), atol=1e-6)
    assert torch.allclose(masked_mean(x, None), x.sum(dim=(1, 2, 3)) / 20, atol=1e-5)


def test_empty_mask_value_has_zero_gradient():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    m = torch.zeros(2, 1, 4, 4)
    m[1, :, :2] = 1
    out = masked_mean(x, m, channels="mean", empty=math.nan)
    assert math.isnan(out[0].item()) and math.isfinite(out[1].item())
    (g,) = torch.autograd.grad(out[1], x)
    assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[1]) == 3 * 8


def test_bad_arguments_are_named():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ShapeError, match="mask"):
        masked_mean(x, torch.ones(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="channels"):
        masked_mean(x, None, channels="max")
