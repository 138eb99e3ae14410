"""Focal loss against torchvision.ops.sigmoid_focal_loss."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_focal

from deepmot.losses import FocalLoss, sigmoid_focal_loss


@pytest.mark.parametrize("alpha", [0.6, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 1.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("soft", [False, True])
def test_equals_torchvision(alpha, gamma, reduction, soft):
    g = torch.Generator().manual_seed(int(alpha * 100) + int(gamma * 10) + soft)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64) * 4
    t = torch.rand(4, 7, 3, generator=g, dtype=torch.float64)
    t = t if soft else (t > 0.7).double()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = sigmoid_focal_loss(x1, t, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = tv_focal(x2, t, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)


def test_alpha_none_is_unweighted_and_weight_multiplies():
    x, t = torch.randn(10, dtype=torch.float64), (torch.rand(10) > 0.5).double()
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=None), tv_focal(x, t, alpha=-1))
    w = torch.rand(10, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, weight=w, reduction="sum"), (tv_focal(x, t) * w).sum())
    torch.testing.assert_close(FocalLoss(gamma=1.0)(x, t), tv_focal(x, t, gamma=1.0, reduction="mean"))


def test_gradcheck():
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.rand(6, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, gamma=2.0, reduction="sum"), (x,))


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), reduction="avg")
