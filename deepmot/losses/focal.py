"""Sigmoid focal loss (Lin et al. 2017) for binary / multi-label classification heads."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sigmoid_focal_loss", "FocalLoss"]

Reduction = Literal["none", "mean", "sum"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float | None = 0.25, gamma: float = 2.0,
                       weight: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)`` per element, from logits.

    ``logits`` (...) float; ``targets`` same shape, in [0, 1] (1 = positive; soft targets allowed,
    ``p_t = p t + (1 - p)(1 - t)``). ``alpha`` weights positives (``alpha_t = alpha t + (1 - alpha)(1 - t)``;
    None or < 0 disables it), ``gamma >= 0`` focuses on hard examples (0 = plain BCE). ``weight``: optional
    per-element multiplier broadcastable to ``logits``. ``reduction``: "none" (same shape as ``logits``),
    "mean" or "sum". Same values as :func:`torchvision.ops.sigmoid_focal_loss`.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma if gamma != 0 else ce
    if alpha is not None and alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if weight is not None:
        loss = loss * weight
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    """Module form of :func:`sigmoid_focal_loss`; ``forward(logits, targets, weight=None)``."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: Reduction = "mean"):
        super().__init__()
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:  # noqa: D102
        return sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma, weight=weight,
                                  reduction=self.reduction)
