"""Ranking losses on detection heads: targets from a matcher's plan, and module wrappers.

A plan (B, Np, G+1) and the GT classes give, for every (prediction, class) logit of a sigmoid
head (B, Np, K), a ranking target: the plan mass sent to GT of that class, optionally weighted by
the IoU of the prediction with that GT (the continuous label of RS). Rows of masked or ignored
predictions become -1 (left out of the ranking). Typical RS-style training::

    targets = ranking_targets(assignment.plan, inp.gt_labels, K, iou=iou.detach(),
                              pred_mask=assignment.pred_mask, ignore=assignment.ignore)
    rs = RankSortLoss()(inp.pred_logits, targets)              # {"loss_rank", "loss_sort"}
    box = SetPredictionLoss(w_cls=0.0)(...)["loss"]             # L1 + GIoU on the same plan
    loss = rs["loss_rank"] + rs["loss_sort"] + self_balance_weight(rs["loss_rank"] + rs["loss_sort"], box) * box
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepmot.losses.ranking import Nonfinite, ap_loss, rank_sort_loss

__all__ = ["ranking_targets", "RankSortLoss", "APLoss", "self_balance_weight"]


def ranking_targets(plan: Tensor, gt_labels: Tensor, num_classes: int, *, iou: Tensor | None = None,
                    gt_mask: Tensor | None = None, pred_mask: Tensor | None = None,
                    ignore: Tensor | None = None) -> Tensor:
    """(B, Np, K) targets ``t[b, i, k] = sum_{j: c_j = k} plan[b, i, j] * iou[b, i, j]`` (iou = 1 if None).

    ``plan`` (B, Np, G+1), ``gt_labels`` (B, G) int64 in [0, K) at real GT, ``iou`` (B, Np, G) in
    [0, 1] (detach it), ``gt_mask`` (B, G) bool (None = all real), ``pred_mask`` / ``ignore`` (B, Np)
    bool: masked (False) or ignored (True) rows get -1. 0 = negative, > 0 = positive.
    """
    b, n, g1 = plan.shape
    g = g1 - 1
    if gt_labels.shape != (b, g):
        raise ValueError(f"gt_labels has shape {tuple(gt_labels.shape)}, expected {(b, g)}")
    if iou is not None and iou.shape != (b, n, g):
        raise ValueError(f"iou has shape {tuple(iou.shape)}, expected {(b, n, g)}")
    real = torch.ones((b, g), dtype=torch.bool, device=plan.device) if gt_mask is None else gt_mask.bool()
    labels = torch.where(real, gt_labels, torch.zeros_like(gt_labels)).long()
    if bool(((labels < 0) | (labels >= num_classes))[real].any()):
        raise ValueError(f"gt_labels must lie in [0, {num_classes}) for real GT")
    mass = plan[..., :g].detach() * real[:, None, :]
    if iou is not None:
        mass = mass * iou.detach().to(mass.dtype)
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(mass.dtype)  # (B, G, K)
    targets = torch.bmm(mass, onehot)
    drop = torch.zeros((b, n), dtype=torch.bool, device=plan.device)
    if pred_mask is not None:
        drop |= ~pred_mask.bool()
    if ignore is not None:
        drop |= ignore.bool()
    return torch.where(drop[..., None], torch.full_like(targets, -1.0), targets)


class RankSortLoss(nn.Module):
    """Rank & Sort loss over a whole batch (all images and classes ranked together).

    ``forward(logits (...), targets (...))`` -> ``{"loss_rank", "loss_sort"}``; see
    :func:`deepmot.losses.rank_sort_loss`. ``bucketed=True`` (default) is BRS.
    """

    def __init__(self, delta: float = 0.5, *, bucketed: bool = True, self_term: float | None = None,
                 nonfinite: Nonfinite = "raise"):
        super().__init__()
        self.delta, self.bucketed, self.self_term, self.nonfinite = delta, bucketed, self_term, nonfinite

    def forward(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:  # noqa: D102
        rank, sort = rank_sort_loss(logits, targets, delta=self.delta, bucketed=self.bucketed,
                                    self_term=self.self_term, nonfinite=self.nonfinite)
        return {"loss_rank": rank, "loss_sort": sort}


class APLoss(nn.Module):
    """AP loss over a whole batch; ``forward(logits, targets)`` -> ``{"loss_ap"}``.

    Defaults: interpolated AP (RankSortLoss repo). ``APLoss.bap()`` gives the released BAP
    (bucketed, not interpolated, self-comparison H(0)).
    """

    def __init__(self, delta: float = 1.0, *, interpolated: bool = True, bucketed: bool = False,
                 self_term: float | None = 1.0, nonfinite: Nonfinite = "raise"):
        super().__init__()
        self.delta, self.interpolated, self.bucketed = delta, interpolated, bucketed
        self.self_term, self.nonfinite = self_term, nonfinite

    @classmethod
    def bap(cls, delta: float = 1.0) -> "APLoss":
        """The bucketed AP loss as released with BRS."""
        return cls(delta, interpolated=False, bucketed=True, self_term=None)

    def forward(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:  # noqa: D102
        return {"loss_ap": ap_loss(logits, targets, delta=self.delta, interpolated=self.interpolated,
                                   bucketed=self.bucketed, self_term=self.self_term, nonfinite=self.nonfinite)}


def self_balance_weight(rank_sort_total: Tensor, box_loss: Tensor) -> Tensor:
    """RS self-balancing weight of the box loss: ``(L_rank + L_sort) / L_box``, detached (0 if L_box = 0)."""
    num, den = rank_sort_total.detach(), box_loss.detach()
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), torch.zeros_like(den))
