"""Losses for tracking-by-detection: focal, plan-weighted set loss, AP / RS ranking losses
(plain and bucketed), all with shapes documented per function."""

from __future__ import annotations

from deepmot.losses.focal import FocalLoss, sigmoid_focal_loss
from deepmot.losses.ranking import ap_loss, rank_sort_loss
from deepmot.losses.ranking_heads import APLoss, RankSortLoss, ranking_targets, self_balance_weight
from deepmot.losses.set_loss import (
    DetectionSetLoss,
    SetPredictionLoss,
    pairwise_box_losses,
    pairwise_cls_loss,
    plan_weighted_loss,
)

__all__ = [
    "APLoss",
    "RankSortLoss",
    "ranking_targets",
    "self_balance_weight",
    "DetectionSetLoss",
    "FocalLoss",
    "SetPredictionLoss",
    "ap_loss",
    "pairwise_box_losses",
    "pairwise_cls_loss",
    "plan_weighted_loss",
    "rank_sort_loss",
    "sigmoid_focal_loss",
]
