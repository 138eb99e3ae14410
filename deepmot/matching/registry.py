"""Build matchers by name, so a training loop can switch matchers from its config."""

from __future__ import annotations

from collections.abc import Callable

from deepmot.matching.costs import ClassProbCost, CompositeCost, FocalClassCost, GIoUCost, L1BoxCost
from deepmot.matching.deta import IoUAssigner
from deepmot.matching.matchers import ClosestGTMatcher, ClosestPredMatcher, HungarianMatcher
from deepmot.matching.ot import OTMatcher
from deepmot.matching.types import Matcher

__all__ = ["default_cost", "build_matcher", "MATCHERS"]


def default_cost(cls: str = "focal", w_cls: float = 2.0, w_l1: float = 5.0, w_giou: float = 2.0,
                 background: float = 1.0) -> CompositeCost:
    """Deformable-DETR/DETA matching cost: ``w_cls`` focal (``cls="focal"``, sigmoid head) or
    softmax-probability (``cls="prob"``) class cost + ``w_l1`` L1 + ``w_giou`` (1 - GIoU), with
    a constant background column ``background``."""
    if cls == "focal":
        cls_term = FocalClassCost(w_cls)
    elif cls == "prob":
        cls_term = ClassProbCost(w_cls)
    else:
        raise ValueError(f"cls must be 'focal' or 'prob', got {cls!r}")
    return CompositeCost([cls_term, L1BoxCost(w_l1), GIoUCost(w_giou)], background=background)


def _uot(cost=None, **kw) -> OTMatcher:
    kw.setdefault("tau_pred", 100.0)
    kw.setdefault("tau_gt", 0.1)
    kw.setdefault("n_iter", 70)
    return OTMatcher(cost, **kw)


#: name -> constructor taking ``(cost, **kw)``.
MATCHERS: dict[str, Callable[..., Matcher]] = {
    "hungarian": lambda cost=None, **kw: HungarianMatcher(cost, **kw),
    "ot": lambda cost=None, **kw: OTMatcher(cost, **kw),
    "uot": _uot,
    "closest_gt": lambda cost=None, **kw: ClosestGTMatcher(cost, **kw),
    "closest_pred": lambda cost=None, **kw: ClosestPredMatcher(cost, **kw),
    "deta_stage1": lambda cost=None, **kw: IoUAssigner.deta_stage1(**kw),
    "deta_stage2": lambda cost=None, num_queries=300, **kw: IoUAssigner.deta_stage2(num_queries, **kw),
    "iou": lambda cost=None, **kw: IoUAssigner(**kw),
}


def build_matcher(name: str, cost: CompositeCost | None = None, **kw) -> Matcher:
    """A matcher by name: ``"hungarian"``, ``"ot"`` (balanced), ``"uot"`` (``tau_pred=100,
    tau_gt=0.1``, 70 iterations unless overridden), ``"closest_gt"``, ``"closest_pred"``,
    ``"deta_stage1"``, ``"deta_stage2"`` (``num_queries=300``), ``"iou"``. ``cost`` defaults to
    :func:`default_cost`; ``kw`` go to the matcher's constructor (IoU assigners ignore ``cost``)."""
    if name not in MATCHERS:
        raise ValueError(f"unknown matcher {name!r}; choose from {sorted(MATCHERS)}")
    return MATCHERS[name](default_cost() if cost is None else cost, **kw)
