"""Hard matchers on a (B, Np, G+1) cost: Hungarian (DETR), closest GT, closest prediction,
and the soft-min plans that are their entropic limits.

All of them return an :class:`~deepmot.matching.types.Assignment`; unmatched valid predictions
go to the background column. Costs are solved detached, per image, on the valid (free) rows
and columns only; padded GT and masked predictions never take part.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from deepmot.matching.base import BaseMatcher, one_hot_plan
from deepmot.matching.linear import gated_linear_assignment
from deepmot.matching.types import MatchInput

__all__ = ["HungarianMatcher", "ClosestGTMatcher", "ClosestPredMatcher", "softmin_plan", "hungarian_pairs"]


def hungarian_pairs(cost: np.ndarray, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact min-cost matching of one image's ``(n, g)`` cost (float64 numpy, ``+inf`` =
    forbidden). Returns ``(rows, cols)`` int64, sorted by row.

    ``background`` None: maximum-cardinality matching over allowed pairs, minimum cost among
    those (``min(n, g)`` pairs when nothing is forbidden, as DETR). ``background`` ``(n,)``: a
    pair is only kept if it is cheaper than sending its prediction to background, i.e. minimise
    ``sum_matched C_ij + sum_unmatched bg_i`` over all partial matchings.
    """
    if background is None:
        return gated_linear_assignment(cost, forbidden=~np.isfinite(cost))
    if not np.isfinite(background).all():
        raise ValueError("background_threshold needs a finite background cost for every prediction")
    gain = cost - background[:, None]
    allowed = np.isfinite(gain) & (gain < 0)
    if not allowed.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    clipped = np.where(allowed, gain, 0.0)
    rows, cols = linear_sum_assignment(clipped)
    keep = allowed[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


class HungarianMatcher(BaseMatcher):
    """DETR-style one-to-one matcher (scipy's exact Hungarian, per image, rectangular).

    ``cost``: ``MatchInput -> (B, Np, G+1)`` (e.g. ``CompositeCost``). Every GT is matched
    when ``Np >= G`` (``min(Np, G)`` pairs otherwise; ``info["num_unmatched_gt"]`` counts the
    rest). ``background_threshold=True``: a GT may stay unmatched when matching it costs more
    than the background column. ``+inf`` pairs are never matched (a GT with no allowed pair
    stays unmatched). Ties break as scipy's ``linear_sum_assignment``.
    """

    def __init__(self, cost=None, *, background_threshold: bool = False,
                 nonfinite: Literal["raise", "ignore"] = "raise"):
        super().__init__(cost, nonfinite=nonfinite)
        self.background_threshold = bool(background_threshold)

    def _solve(self, cost: Tensor, pred_free: Tensor, gt_free: Tensor, inp: MatchInput):
        c64 = cost.to(dtype=torch.float64, device="cpu").numpy()
        pf, gf = pred_free.cpu().numpy(), gt_free.cpu().numpy()
        pairs = []
        for b in range(cost.shape[0]):
            pi, gi = np.flatnonzero(pf[b]), np.flatnonzero(gf[b])
            if pi.size == 0 or gi.size == 0:
                continue
            full = pi.size == c64.shape[1] and gi.size == c64.shape[2] - 1
            sub = c64[b, :, :-1] if full else c64[b][np.ix_(pi, gi)]  # no copy when all are free
            bg = c64[b, pi, -1] if self.background_threshold else None
            r, c = hungarian_pairs(sub, bg)
            dev = cost.device
            pairs.append((b, torch.as_tensor(pi[r], device=dev), torch.as_tensor(gi[c], device=dev)))
        plan = one_hot_plan(tuple(cost.shape), pairs, pred_free)
        return plan, True, {}


class ClosestGTMatcher(BaseMatcher):
    """Each prediction goes to its cheapest column among the valid GT and the background
    (one-to-many; the background cost acts as a threshold). The UOT limit ``tau_pred -> inf,
    tau_gt = 0, eps -> 0``. Ties go to the lowest GT index, GT before background."""

    def _solve(self, cost: Tensor, pred_free: Tensor, gt_free: Tensor, inp: MatchInput):
        g = cost.shape[-1] - 1
        col_ok = torch.cat([gt_free, gt_free.new_ones(gt_free.shape[0], 1)], 1)
        c = cost.masked_fill(~col_ok[:, None, :], math.inf)
        best, idx = c.min(dim=-1)
        idx = torch.where(torch.isfinite(best), idx, torch.full_like(idx, g))
        plan = torch.nn.functional.one_hot(idx, g + 1).to(torch.float32)
        return plan * pred_free[..., None], True, {}


class ClosestPredMatcher(BaseMatcher):
    """Each valid GT takes its cheapest valid prediction; predictions nobody takes go to
    background. The UOT limit ``tau_pred = 0, tau_gt -> inf, eps -> 0``.

    ``max_cost``: a GT keeps its match only if that cost is ``<= max_cost`` (None: always).
    A prediction chosen by ``k`` GTs sends ``1/k`` of its mass to each (then ``hard=False``).
    Ties go to the lowest prediction index.
    """

    def __init__(self, cost=None, *, max_cost: float | None = None,
                 nonfinite: Literal["raise", "ignore"] = "raise"):
        super().__init__(cost, nonfinite=nonfinite)
        self.max_cost = max_cost

    def _solve(self, cost: Tensor, pred_free: Tensor, gt_free: Tensor, inp: MatchInput):
        bsz, n, g1 = cost.shape
        g = g1 - 1
        c = cost[..., :g].masked_fill(~pred_free[:, :, None], math.inf)
        plan = torch.zeros(cost.shape, dtype=torch.float32, device=cost.device)
        if n == 0 or g == 0:
            plan[..., g] = pred_free.to(torch.float32)
            return plan, True, {}
        best, idx = c.min(dim=1)  # (B, G)
        keep = gt_free & torch.isfinite(best)
        if self.max_cost is not None:
            keep &= best <= self.max_cost
        bi, gi = torch.nonzero(keep, as_tuple=True)
        pi = idx[bi, gi]
        plan[bi, pi, gi] = 1.0
        takers = plan[..., :g].sum(-1, keepdim=True)
        plan[..., :g] = torch.where(takers > 0, plan[..., :g] / takers.clamp(min=1.0), plan[..., :g])
        plan[..., g] = (pred_free & (takers[..., 0] == 0)).to(torch.float32)
        return plan, bool(takers.max() <= 1) if takers.numel() else True, {}


def softmin_plan(cost: Tensor, pred_mask: Tensor, gt_mask: Tensor, *, eps: float,
                 over: Literal["gt", "pred"]) -> Tensor:
    """Soft-min plans, the entropic versions of the closest matchers (UOT paper, App. C.2).

    ``cost`` (B, Np, G+1), masks (B, Np) / (B, G), ``eps`` > 0 the temperature.
    ``over="pred"``: each prediction's row is ``softmax(-cost / eps)`` over valid GT and the
    background (soft :class:`ClosestGTMatcher`). ``over="gt"``: each GT column is a softmax over
    valid predictions (soft :class:`ClosestPredMatcher`) and the background column holds
    ``max(n - g, 0) / n`` for every valid prediction (``n``, ``g``: valid counts). Returns a
    (B, Np, G+1) plan, zero outside the masks.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    pm, gm = pred_mask.to(torch.bool), gt_mask.to(torch.bool)
    col_ok = torch.cat([gm, gm.new_ones(gm.shape[0], 1)], 1)
    live = pm[:, :, None] & col_ok[:, None, :]
    logits = (-cost / eps).masked_fill(~live, -math.inf)
    if over == "pred":
        plan = torch.softmax(logits, dim=-1)
    elif over == "gt":
        g = cost.shape[-1] - 1
        plan = torch.softmax(logits[..., :g], dim=1)
        n_valid = pm.sum(1, keepdim=True).to(cost.dtype)
        g_valid = gm.sum(1, keepdim=True).to(cost.dtype)
        bg = ((n_valid - g_valid).clamp(min=0) / n_valid.clamp(min=1)).expand(-1, cost.shape[1])
        plan = torch.cat([plan, bg[..., None]], dim=-1)
    else:
        raise ValueError(f"over must be 'gt' or 'pred', got {over!r}")
    return torch.nan_to_num(plan, nan=0.0).masked_fill(~live, 0.0)
