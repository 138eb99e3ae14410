"""Matchers for tracking-by-detection: one :class:`Assignment` type, interchangeable matchers.

Every matcher maps a :class:`MatchInput` to an :class:`Assignment` -- a plan over predictions x
(GT + background) -- so any matcher feeds any plan-weighted loss; :func:`build_matcher` picks one
by name and :func:`associate` matches tracks to detections at inference.
"""

from __future__ import annotations

from deepmot.matching.aligned import AssignmentAlignedLoss
from deepmot.matching.associate import associate
from deepmot.matching.base import BaseMatcher
from deepmot.matching.costs import (
    ClassProbCost,
    CompositeCost,
    FocalClassCost,
    GIoUCost,
    IoUCost,
    L1BoxCost,
    NLLClassCost,
)
from deepmot.matching.deta import IoUAssigner
from deepmot.matching.linear import gated_linear_assignment
from deepmot.matching.matchers import ClosestGTMatcher, ClosestPredMatcher, HungarianMatcher, softmin_plan
from deepmot.matching.ot import OTMatcher
from deepmot.matching.registry import build_matcher, default_cost
from deepmot.matching.sinkhorn import eps_rule, sinkhorn_log
from deepmot.matching.types import PRED_BACKGROUND, PRED_MASKED, Assignment, Matcher, MatchInput

__all__ = [
    "Assignment", "MatchInput", "Matcher", "PRED_BACKGROUND", "PRED_MASKED", "BaseMatcher",
    "ClassProbCost", "FocalClassCost", "NLLClassCost", "L1BoxCost", "GIoUCost", "IoUCost", "CompositeCost",
    "HungarianMatcher", "ClosestGTMatcher", "ClosestPredMatcher", "OTMatcher", "IoUAssigner", "softmin_plan",
    "AssignmentAlignedLoss", "associate", "build_matcher", "default_cost", "eps_rule", "sinkhorn_log",
    "gated_linear_assignment",
]
