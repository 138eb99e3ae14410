"""Assignment-aligned Hungarian loss ("How to Backpropagate through Hungarian in Your DETR?").

The loss is the optimal value of the matching problem itself (eqs. 6-8 of the paper),

    C(i, j) = -log p_i(c_j) + w_bg log p_i(bg) + L_box(b_i, b_j)
    L = min_s sum_j C(s(j), j)  +  L_background,     L_background = -w_bg sum_i log p_i(bg)

with ``L_box = w_l1 ||b_i - b_j||_1 + w_giou (1 - GIoU)``. Its generalised gradient (eq. 9) is
obtained by solving the assignment on the detached cost and summing the grad-attached optimal
entries. ``w_bg = 1`` is the paper; other values generalise it with DETR's ``eos_coef``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from deepmot.matching.costs import CompositeCost, GIoUCost, L1BoxCost, NLLClassCost
from deepmot.matching.matchers import HungarianMatcher
from deepmot.matching.types import MatchInput

__all__ = ["AssignmentAlignedLoss"]


class AssignmentAlignedLoss(nn.Module):
    """Loss = optimal assignment cost + background term, summed over the batch.

    Expects a softmax head with background last (``pred_logits`` (B, Np, K+1)) and cxcywh boxes.
    ``normalize="num_gt"`` divides by ``max(1, #GT in the batch)`` (the paper argues for
    ``"none"``). ``forward(inp)`` returns ``loss``, ``loss_assign``, ``loss_background`` (0-d
    tensors with gradient) and ``assignment`` (the :class:`Assignment` solved; with
    ``Np < G`` only ``Np`` GT are matched, see ``assignment.info["num_unmatched_gt"]``).
    """

    def __init__(self, *, w_l1: float = 5.0, w_giou: float = 2.0, bg_weight: float = 1.0,
                 normalize: Literal["none", "num_gt"] = "none"):
        super().__init__()
        if normalize not in ("none", "num_gt"):
            raise ValueError(f"normalize must be 'none' or 'num_gt', got {normalize!r}")
        self.bg_weight = float(bg_weight)
        self.normalize = normalize
        self.cost = CompositeCost([NLLClassCost(1.0, bg_weight), L1BoxCost(w_l1), GIoUCost(w_giou, offset=1.0)],
                                  background=0.0)
        self.matcher = HungarianMatcher(self.cost)

    def forward(self, inp: MatchInput) -> dict[str, Tensor]:
        """-> dict(loss, loss_assign, loss_background, assignment)."""
        cost = self.cost(inp)  # (B, Np, G+1), with gradient
        assignment = self.matcher(inp, cost=cost.detach())
        g = inp.num_gt
        plan = assignment.plan[..., :g].to(cost.dtype)
        pair_cost = torch.where(plan > 0, cost[..., :g], torch.zeros_like(cost[..., :g]))
        # "+ 0 * boxes" keeps a (zero) gradient path to the boxes when nothing is matched.
        loss_assign = (plan * pair_cost).sum() + 0.0 * inp.pred_boxes.sum()
        logp_bg = inp.pred_logits.to(cost.dtype).log_softmax(-1)[..., -1]
        logp_bg = torch.where(assignment.pred_mask, logp_bg, torch.zeros_like(logp_bg))
        loss_background = -self.bg_weight * logp_bg.sum()
        loss = loss_assign + loss_background
        if self.normalize == "num_gt":
            denom = max(1, int(inp.gt_mask.sum()))
            loss, loss_assign, loss_background = loss / denom, loss_assign / denom, loss_background / denom
        return {"loss": loss, "loss_assign": loss_assign, "loss_background": loss_background,
                "assignment": assignment}
