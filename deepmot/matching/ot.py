"""Optimal-transport matcher (balanced and unbalanced entropic OT, De Plaen et al. CVPR'23).

Per image with ``n`` valid predictions and ``g`` valid GT, the plan moves mass ``a_i = 1/n``
from every prediction to ``b_j = min(1, n/g)/n`` per GT and ``b_bg = max(n - g, 0)/n`` to the
background column (Prop. 1 of the paper, kept feasible and non-negative when ``n < g``), and is
returned scaled by ``n`` so that every valid row sums to 1 (within the solver tolerance).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

from deepmot.matching.base import BaseMatcher
from deepmot.matching.sinkhorn import eps_rule as _eps_rule
from deepmot.matching.sinkhorn import sinkhorn_exp, sinkhorn_log
from deepmot.matching.types import MatchInput

__all__ = ["OTMatcher", "ot_marginals"]


def ot_marginals(pred_free: Tensor, gt_free: Tensor, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Marginals of the matching OT problem: ``a`` (B, Np) and ``b`` (B, G+1), 0 where masked.

    ``a_i = 1/n``; ``b_j = min(1, n/g)/n`` for valid GT; ``b_bg = max(n - g, 0)/n``; both sum
    to 1 per image with ``n >= 1``.
    """
    n = pred_free.sum(1, keepdim=True).to(dtype)
    g = gt_free.sum(1, keepdim=True).to(dtype)
    inv_n = 1.0 / n.clamp(min=1.0)
    a = pred_free.to(dtype) * inv_n
    per_gt = torch.minimum(torch.ones_like(n), n / g.clamp(min=1.0)) * inv_n
    b_gt = gt_free.to(dtype) * per_gt
    b_bg = (n - g).clamp(min=0.0) * inv_n
    b_bg = torch.where(n > 0, b_bg, torch.zeros_like(b_bg))
    return a, torch.cat([b_gt, b_bg], dim=1)


class OTMatcher(BaseMatcher):
    """Entropic OT matcher, batched over images with a log-domain Sinkhorn.

    ``cost``: ``MatchInput -> (B, Np, G+1)`` (background column last). ``eps``: fixed
    regularisation on the normalised cost, or None for the rule ``eps0 / (log(2n) + 1)``
    (``eps_rule="logn"``: ``log(n)``) with ``n`` the image's number of valid predictions.
    ``tau_pred`` / ``tau_gt``: marginal relaxations (inf = balanced; ``tau_pred=100,
    tau_gt=0.1`` is the paper's SSD-like UOT). ``n_iter``: maximum iterations; ``tol``: early
    stop (see :func:`~deepmot.matching.sinkhorn.sinkhorn_log`). ``normalize``: divide the cost
    by its largest finite magnitude ``"per_image"`` (default; images stay independent),
    ``"global"`` (over the batch) or ``"none"``. ``compat="uotod"`` reproduces the reference
    code's numerics: exp-domain iterations, padded GT costs set to 0, one global max, ``eps``
    from the padded ``Np``. ``info``: ``n_iter`` (B,), ``eps`` (B,), ``marginal_err`` (B,) =
    ``max_i |sum_j plan_ij - 1|`` over valid rows.
    """

    hard = False

    def __init__(self, cost=None, *, eps: float | None = None, eps0: float = 0.12,
                 eps_rule: Literal["log2n", "logn"] = "log2n", tau_pred: float = math.inf,
                 tau_gt: float = math.inf, n_iter: int = 20, tol: float | None = None,
                 normalize: Literal["per_image", "global", "none"] = "per_image",
                 compat: Literal["none", "uotod"] = "none", nonfinite: Literal["raise", "ignore"] = "raise"):
        super().__init__(cost, nonfinite=nonfinite)
        if normalize not in ("per_image", "global", "none"):
            raise ValueError(f"normalize must be 'per_image', 'global' or 'none', got {normalize!r}")
        if compat not in ("none", "uotod"):
            raise ValueError(f"compat must be 'none' or 'uotod', got {compat!r}")
        if eps is not None and eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if tau_pred < 0 or tau_gt < 0:
            raise ValueError("tau_pred and tau_gt must be >= 0")
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        _eps_rule(1, eps0, eps_rule)  # validates the rule name
        self.eps, self.eps0, self.eps_rule = eps, float(eps0), eps_rule
        self.tau_pred, self.tau_gt = float(tau_pred), float(tau_gt)
        self.n_iter, self.tol = int(n_iter), tol
        self.normalize, self.compat = normalize, compat
        if tau_gt >= 1 and not math.isinf(tau_gt) and tol is None and n_iter < 500:
            warnings.warn(f"OTMatcher: tau_gt={tau_gt} >= 1 converges slowly; {n_iter} iterations leave a large "
                          "marginal error (check info['marginal_err'] or set tol)", stacklevel=2)

    def _scale(self, cost: Tensor, live: Tensor) -> Tensor:
        """(B,) divisor of each image's cost."""
        bsz = cost.shape[0]
        if self.normalize == "none":
            return cost.new_ones(bsz)
        mag = torch.where(live & torch.isfinite(cost), cost.abs(), torch.zeros_like(cost))
        per = mag.flatten(1).amax(1) if mag[0].numel() else cost.new_zeros(bsz)
        if self.normalize == "global":
            per = per.amax().expand(bsz) if bsz else per
        return per.clamp(min=1e-8)

    def _solve(self, cost: Tensor, pred_free: Tensor, gt_free: Tensor, inp: MatchInput):
        bsz, n_pred, g1 = cost.shape
        dt = torch.promote_types(cost.dtype, torch.float32)
        cost = cost.to(dt)
        finite = torch.isfinite(cost)
        # Rows with no allowed column at all fall back to background; GT that no free
        # prediction may reach are dropped from the problem (they stay unmatched).
        col_free = torch.cat([gt_free, gt_free.new_ones(bsz, 1)], 1)
        stuck = pred_free & ~(finite & col_free[:, None, :]).any(2)
        rows = pred_free & ~stuck
        cols = gt_free & (finite[..., :-1] & rows[:, :, None]).any(1)
        a, b = ot_marginals(rows, cols, dtype=dt)
        n_rows = rows.sum(1)
        if self.eps is not None:
            eps = torch.full((bsz,), self.eps, dtype=dt, device=cost.device)
        elif self.compat == "uotod":
            eps = torch.full((bsz,), float(_eps_rule(n_pred, self.eps0, self.eps_rule)), dtype=dt, device=cost.device)
        else:
            eps = _eps_rule(n_rows, self.eps0, self.eps_rule).to(dt)
        live = rows[:, :, None] & torch.cat([cols, cols.new_ones(bsz, 1)], 1)[:, None, :]
        if self.compat == "uotod":
            c = cost.clone()
            c[..., :-1] = c[..., :-1].masked_fill(~gt_free[:, None, :], 0.0)
            top = c[torch.isfinite(c)].max() if torch.isfinite(c).any() else c.new_tensor(1.0)
            c = c / top.clamp(min=1e-8)
            plan = sinkhorn_exp(c, a, b, eps, n_iter=self.n_iter, tau_a=self.tau_pred, tau_b=self.tau_gt)
            n_done = torch.full((bsz,), self.n_iter, dtype=torch.int64, device=cost.device)
        else:
            c = cost / self._scale(cost, live)[:, None, None]
            c = c.masked_fill(~live, math.inf)
            log_a = torch.where(a > 0, a.log(), torch.full_like(a, -math.inf))
            log_b = torch.where(b > 0, b.log(), torch.full_like(b, -math.inf))
            plan, _, _, n_done = sinkhorn_log(c, log_a, log_b, eps, n_iter=self.n_iter, tol=self.tol,
                                              tau_a=self.tau_pred, tau_b=self.tau_gt)
        plan = plan * n_rows.clamp(min=1).to(dt)[:, None, None]
        plan = plan.masked_fill(~live, 0.0)
        plan[..., -1] = torch.where(stuck, torch.ones_like(plan[..., -1]), plan[..., -1])
        row_err = (plan.sum(-1) - 1.0).abs().masked_fill(~pred_free, 0.0)
        info = {"n_iter": n_done, "eps": eps,
                "marginal_err": row_err.amax(1) if n_pred else row_err.new_zeros(bsz)}
        return plan, False, info
