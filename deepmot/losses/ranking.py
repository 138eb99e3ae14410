"""Ranking-based classification losses: AP loss, Rank & Sort (RS) loss and their bucketed
versions (BAP, BRS), vectorised, with identity-update gradients.

All functions take flat ``logits`` (any shape, flattened) and ``targets`` of the same shape:
``t > 0`` positive (for RS the value is the positive's IoU, the continuous sorting label),
``t == 0`` negative, ``t < 0`` ignored. Everything is normalised by the number of positives
``P`` of the whole flattened input.

Notation: ``H(x) = clamp(x / (2 delta) + 1/2, 0, 1)`` for ``delta > 0`` and ``1[x >= 0]`` for
``delta == 0``; for a positive ``i``, ``rank+(i) = self_term + sum_{j in P, j != i} H(s_j - s_i)``
and ``FP(i) = sum_{j in N'} H(s_j - s_i)`` over the *relevant* negatives
``N' = {j : s_j >= min_P s - delta}`` (the others have ``H = 0`` against every positive).
The ranking error is ``l_R(i) = FP(i) / (rank+(i) + FP(i))`` (= 1 - precision at ``i``).

The gradients are not the autograd derivative of these step-function losses (which is zero
almost everywhere) but the "identity update" of Oksuz et al.: the error of each positive is
pushed back onto the examples that cause it through a probability mass function, so the
gradients of every loss sum to 0 over the logits. They are computed in the forward pass and
returned by a custom :class:`torch.autograd.Function`.

Bucketing (Yavuz et al.): negatives between two consecutive positives (in descending logit
order) are replaced by one prototype at their mean logit, weighted by their count; the
``P x N'`` comparisons shrink to ``P x (P + 1)``. With ``delta == 0`` the bucketed losses and
gradients equal the plain ones exactly (ties are put *above* the positive they tie with, so a
tied negative counts as a false positive in both; the prototype is then a member of its bucket).

Differences from the reference code (on purpose): ``L_rank`` and ``L_sort`` carry their own
gradient (the references route the sum through ``L_rank``; with unit weights the gradient of
the sum is identical); ``self_term`` makes the self-comparison in ``rank+`` explicit (the RS and
BAP references use ``H(0)``, i.e. 1/2 for ``delta > 0``; the AP reference uses 1); no positives
or no relevant negatives give 0 instead of crashing; non-finite logits raise by default.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["rank_sort_loss", "ap_loss"]

#: FP counts and sorting-pmf denominators at or below this are treated as 0 (as in RS).
_EPS = 1e-10
#: Float elements in one positives x negatives block: bounds peak memory (4 MB in float32) and keeps
#: each block cache-sized (measured 3x faster than 16 MB blocks at 10^5 logits on CPU).
_BLOCK_ELEMS = 1 << 20
#: Same for the positives x positives block of the sorting terms (several temporaries per block).
_POS_BLOCK_ELEMS = 1 << 18
#: Grid cells per positive in the bucket lookup: 8-16 leave ~1-3 % of queries in a crowded cell
#: (measured at 10^5 logits, 1 % positives, normal scores).
_CELLS_PER_POSITIVE = 8

Nonfinite = Literal["raise", "ignore"]


def _affine_terms(cols: Tensor, rows: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """``(u, v)`` with ``H(cols_j - rows_i) = clamp(u_j + v_i, 0, 1)`` (delta > 0) or ``1[u_j + v_i >= 0]``."""
    if delta > 0:
        scale = 1.0 / (2.0 * delta)
        return cols * scale, 0.5 - rows * scale
    return cols, -rows


def _step_block(u: Tensor, v: Tensor, delta: float, out: Tensor) -> Tensor:
    """(len(v), len(u)) block of ``H`` written into ``out``: one add and one clamp (or compare) per element.

    Callers reuse one ``out`` buffer across blocks: allocating a fresh multi-MB block per iteration
    (two alive at once, the old one until the new one is assigned) made plain RS 1.7-5x slower on CPU
    at 10^5 logits (BENCHMARKS.md); with one buffer the block stays in cache.
    """
    h = torch.add(u[None, :], v[:, None], out=out)
    return h.clamp_(0.0, 1.0) if delta > 0 else torch.ge(h, 0.0, out=h)


class _IdentityUpdate(torch.autograd.Function):
    """Returns precomputed loss ``values`` (k,); backward gives ``sum_k g_k * grads[k]`` (grads (k, L))."""

    @staticmethod
    def forward(ctx, logits: Tensor, values: Tensor, grads: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(grads)
        ctx.shape = logits.shape
        return values.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: D102
        (grads,) = ctx.saved_tensors
        return (grad_out.to(grads.dtype) @ grads).reshape(ctx.shape), None, None


def _check_inputs(logits: Tensor, targets: Tensor, delta: float, nonfinite: str,
                  self_term: float | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate and flatten; returns detached ``s`` (L,), ``t`` (L,) and a ``usable`` mask (L,) (None: all)."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("logits and targets must be tensors")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if not (delta >= 0):
        raise ValueError(f"delta must be >= 0, got {delta}")
    if nonfinite not in ("raise", "ignore"):
        raise ValueError(f"nonfinite must be 'raise' or 'ignore', got {nonfinite!r}")
    if self_term is not None and not (self_term > 0):
        raise ValueError(f"self_term must be > 0 (or None for H(0)), got {self_term}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    s = logits.detach().reshape(-1).to(dtype)
    t = targets.detach().reshape(-1).to(dtype)
    if bool(torch.isfinite(s.sum() + t.sum())):  # fast path: then every value is finite (one reduction each)
        return s, t, None
    bad = ~torch.isfinite(s) | torch.isnan(t)
    bad &= ~(t < 0)  # ignored entries may hold anything
    if bool(bad.any()):
        if nonfinite == "raise":
            idx = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(f"ranking loss: {int(bad.sum())} non-finite logit/target value(s) at flat "
                             f"index {idx}...; pass nonfinite='ignore' to drop them")
    return s, t, ~bad


def _negative_pass(sp: Tensor, sn: Tensor, mult: Tensor | None, delta: float,
                   rank_pos: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Compare positives ``sp`` (P,) with negatives/prototypes ``sn`` (M,) in row blocks.

    ``mult`` (M,): multiplicity of each column (bucket sizes), None = 1. Returns ``FP`` (P,)
    ``= sum_j mult_j H(sn_j - sp_i)`` and, if ``weight`` (P,) is given, the per-unit gradient
    of each column ``sum_i c_i H(sn_j - sp_i)`` with ``c_i = weight_i [FP_i > eps] / (rank+_i + FP_i)``.
    """
    p, m = sp.numel(), sn.numel()
    fp = sp.new_zeros(p)
    grad = sn.new_zeros(m) if weight is not None else None
    if m == 0 or p == 0:
        return fp, grad
    u, v = _affine_terms(sn, sp, delta)
    rows = max(1, _BLOCK_ELEMS // m)
    buf = sp.new_empty(min(rows, p), m)
    for a in range(0, p, rows):  # blocks of positives (not one positive at a time)
        b = min(p, a + rows)
        h = _step_block(u, v[a:b], delta, buf[: b - a])  # (rows, M)
        f = h @ mult if mult is not None else h.sum(1)
        fp[a:b] = f
        if weight is not None:
            c = torch.where(f > _EPS, weight[a:b] / (rank_pos[a:b] + f), torch.zeros_like(f))
            grad.addmv_(h.T, c)
    return fp, grad


def _positive_pass(sp: Tensor, tp: Tensor, delta: float, self_val: float,
                   sorting: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Positive-vs-positive terms, in row blocks of ``H[i, j] = H(s_j - s_i)`` (self = ``self_val``).

    Returns ``rank+`` (P,) and, if ``sorting``, the RS sorting error (P,) and its unnormalised
    identity-update gradient on the positives (P,).
    """
    p = sp.numel()
    rank_pos = sp.new_empty(p)
    sort_err = sp.new_empty(p) if sorting else None
    g_sort = sp.new_zeros(p) if sorting else None
    one_minus_t = 1 - tp
    # Dense ranks of the targets (exact small integers): clamp(r_i - r_k, 0, 1) = 1[t_k < t_i] with two
    # fast float kernels instead of a boolean mask (masked_fill is ~10x slower per element on CPU).
    t_rank = torch.unique(tp, return_inverse=True)[1].to(sp.dtype) if sorting else None
    u, v = _affine_terms(sp, sp, delta)
    rows = max(1, _POS_BLOCK_ELEMS // p)
    h_buf = sp.new_empty(min(rows, p), p)
    w_buf = sp.new_empty(min(rows, p), p) if sorting else None
    for a in range(0, p, rows):
        b = min(p, a + rows)
        h = _step_block(u, v[a:b], delta, h_buf[: b - a])
        h.diagonal(a).fill_(self_val)  # entries (i, i) of this row block
        rank_pos[a:b] = h.sum(1)
        if not sorting:
            continue
        current = (h @ one_minus_t) / rank_pos[a:b]
        # [i, k]: k out-scores i (softly) but is worse localised: H * 1[t_k < t_i]
        missorted = torch.sub(t_rank[a:b, None], t_rank[None, :], out=w_buf[: b - a]).clamp_(0.0, 1.0).mul_(h)
        target_order = h.sub_(missorted)  # the positives at or above i in the target order (exact 0 or h)
        target = (target_order @ one_minus_t) / target_order.sum(1)
        err = current - target
        denom = missorted.sum(1)
        active = denom > _EPS
        coef = torch.where(active, err / denom.clamp(min=_EPS), torch.zeros_like(err))
        g_sort[a:b] -= err * active
        g_sort.addmv_(missorted.T, coef)
        sort_err[a:b] = err
    return rank_pos, sort_err, g_sort


def _count_at_or_below(asc: Tensor, x: Tensor) -> Tensor:
    """``torch.searchsorted(asc, x, right=True)`` (int64, same shape as ``x``), several times faster on CPU.

    ``asc`` (P,) sorted ascending, ``x`` (M,) finite. A binary search per query is bound by branch
    mispredictions; instead a uniform grid of ``_CELLS_PER_POSITIVE * P`` cells over
    ``[asc[0], asc[-1]]`` is indexed directly. The cell function is monotone (the same float ops
    for queries and for ``asc``), so every element of ``asc`` in a lower cell than ``x`` is ``<= x``
    and every one in a higher cell is ``> x``: the count is exact. A query whose cell holds one
    element compares with it; the few whose cell holds several fall back to ``searchsorted``.
    """
    p = asc.numel()
    cells = _CELLS_PER_POSITIVE * p
    lo, span = asc[0], asc[-1] - asc[0]
    scale = cells / span
    if not (0 < float(scale) < math.inf):  # all equal, span subnormal or overflowing: one cell
        return torch.searchsorted(asc, x, right=True)

    def cell(values: Tensor) -> Tensor:
        return ((values - lo) * scale).clamp_(0, cells - 1).long()

    occ = torch.bincount(cell(asc), minlength=cells)
    below = occ.cumsum(0) - occ  # elements of asc in lower cells
    single = asc[below.clamp(max=p - 1)].masked_fill_(occ == 0, float("inf"))  # an empty cell never counts
    c = cell(x)
    count = below.index_select(0, c) + (x >= single.index_select(0, c))
    crowded = torch.nonzero(occ.index_select(0, c) > 1).flatten()
    if crowded.numel():
        count.index_copy_(0, crowded, torch.searchsorted(asc, x.index_select(0, crowded), right=True))
    return count


def _buckets(sp: Tensor, sn: Tensor, delta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Group negatives ``sn`` (M,) into the P+1 gaps between positives ``sp`` (P,).

    Bucket ``k`` holds the negatives with exactly ``k`` positives strictly above them (a negative
    tied with a positive sits above it). Returns ``bucket`` (M,) int64, prototype logits (P+1,)
    and sizes (P+1,); empty buckets have size 0. The prototype is the bucket mean (as in the
    reference) for delta > 0; for delta = 0 it is the bucket's largest member, which compares
    with every positive exactly as each member does (a rounded mean could fall outside the bucket).
    """
    p = sp.numel()
    asc = torch.sort(sp).values
    bucket = p - _count_at_or_below(asc, sn)
    size = torch.bincount(bucket, minlength=p + 1).to(sn.dtype)
    if delta > 0:
        proto = torch.zeros_like(size).scatter_add_(0, bucket, sn) / size.clamp(min=1)
    else:
        proto = torch.zeros_like(size).scatter_reduce_(0, bucket, sn, "amax", include_self=False)
    return bucket, proto, size


def _ranking_terms(s: Tensor, t: Tensor, usable: Tensor | None, *, delta: float, bucketed: bool,
                   self_term: float | None, interpolated: bool, sorting: bool):
    """Shared core. Returns ``(values (k,), grads (k, L))``: one flat gradient per loss value."""
    length = s.numel()
    pos = torch.nonzero(t > 0 if usable is None else usable & (t > 0)).flatten()
    n_out = 2 if sorting else 1
    grads = s.new_zeros(n_out, length)
    p = pos.numel()
    if p == 0:
        return s.new_zeros(n_out), grads
    sp, tp = s.index_select(0, pos), t.index_select(0, pos)
    relevant = (t == 0) & (s >= sp.min() - delta)  # negatives that can compare with a positive
    neg = torch.nonzero(relevant if usable is None else relevant & usable).flatten()
    sn = s.index_select(0, neg)

    self_val = (0.5 if delta > 0 else 1.0) if self_term is None else float(self_term)
    rank_pos, sort_err, g_sort_pos = _positive_pass(sp, tp, delta, self_val, sorting)

    if bucketed:
        bucket, cols, mult = _buckets(sp, sn, delta)
    else:
        bucket, cols, mult = None, sn, None

    if interpolated:  # AP: running max of precision over ascending logits needs all FP first
        fp, _ = _negative_pass(sp, cols, mult, delta, rank_pos, None)
        prec = rank_pos / (rank_pos + fp)
        order = torch.sort(sp, stable=True).indices
        run = torch.cummax(prec[order], 0).values
        interp = torch.empty_like(prec)
        interp[order] = run
        ratio = (1 - interp) / (1 - prec).clamp(min=torch.finfo(prec.dtype).tiny)
        weight = torch.where(prec >= interp, torch.ones_like(prec), ratio)
        fp, col_grad = _negative_pass(sp, cols, mult, delta, rank_pos, weight)
        err_pos = 1 - interp
        pos_grad = -err_pos  # the reference AP loss does not gate this on FP > 0
    else:
        fp, col_grad = _negative_pass(sp, cols, mult, delta, rank_pos, torch.ones_like(sp))
        err_pos = fp / (rank_pos + fp)
        pos_grad = -torch.where(fp > _EPS, err_pos, torch.zeros_like(err_pos))

    grads[0].index_copy_(0, pos, pos_grad / p)
    if neg.numel():
        col_grad = col_grad / p
        grads[0].index_copy_(0, neg, col_grad.index_select(0, bucket) if bucketed else col_grad)
    if not sorting:
        return err_pos.mean()[None], grads
    grads[1].index_copy_(0, pos, g_sort_pos / p)
    return torch.stack([err_pos.mean(), sort_err.mean()]), grads


def _apply(logits: Tensor, values: Tensor, grads: Tensor) -> list[Tensor]:
    out = _IdentityUpdate.apply(logits, values.to(logits.dtype), grads.to(logits.dtype))
    return list(out.unbind(0))


def rank_sort_loss(logits: Tensor, targets: Tensor, *, delta: float = 0.5, bucketed: bool = True,
                   self_term: float | None = None, nonfinite: Nonfinite = "raise") -> tuple[Tensor, Tensor]:
    """Rank & Sort loss (Oksuz et al. 2021); ``bucketed=True`` is BRS (Yavuz et al.).

    ``logits`` (...) float, ``targets`` (...) same shape: IoU of each positive in (0, 1], 0 for
    negatives, < 0 ignored. Returns ``(L_rank, L_sort)``, scalars in [0, 1], each with its own
    identity-update gradient; the gradient of ``L_rank + L_sort`` equals the reference RS/BRS
    gradient. ``self_term``: weight of a positive compared with itself in ``rank+``; None = H(0)
    (1/2 for delta > 0, 1 for delta = 0) as in the references. ``nonfinite``: "raise" on NaN/inf
    logits or NaN targets, "ignore" to drop those entries (zero gradient). No positives -> (0, 0).
    """
    s, t, usable = _check_inputs(logits, targets, delta, nonfinite, self_term)
    values, grads = _ranking_terms(s, t, usable, delta=delta, bucketed=bucketed, self_term=self_term,
                                   interpolated=False, sorting=True)
    rank, sort = _apply(logits, values, grads)
    return rank, sort


def ap_loss(logits: Tensor, targets: Tensor, *, delta: float = 1.0, interpolated: bool = True,
            bucketed: bool = False, self_term: float | None = 1.0, nonfinite: Nonfinite = "raise") -> Tensor:
    """AP loss ``1 - mean precision`` over positives, with identity-update gradients.

    ``logits`` (...) float, ``targets`` (...) same shape: > 0 positive (value unused), 0 negative,
    < 0 ignored. Returns a scalar in [0, 1]. Defaults reproduce the interpolated AP loss of the
    RankSortLoss repository (precision replaced by its running max over ascending logits, self
    counted as 1). The released BAP is ``ap_loss(..., bucketed=True, interpolated=False,
    self_term=None)``; ``bucketed=True`` with the defaults is the bucketed version of the
    interpolated loss (equal to it at delta = 0). No positives or no relevant negatives -> 0.
    """
    s, t, usable = _check_inputs(logits, targets, delta, nonfinite, self_term)
    values, grads = _ranking_terms(s, t, usable, delta=delta, bucketed=bucketed, self_term=self_term,
                                   interpolated=interpolated, sorting=False)
    return _apply(logits, values, grads)[0]
