"""DETA's one-to-many IoU assignment ("NMS strikes back"), stage 1 (anchors) and stage 2
(proposals), with the paper's object balancing or the released code's variant.

Per image, on the ``(G, Np)`` IoU between GT and reference boxes:

1. labels: a prediction whose best IoU is ``>= pos_thr`` is positive, ``< neg_thr`` negative,
   in between ignored (``neg_thr=None``: no ignore band); with ``low_quality`` every prediction
   that attains a GT's highest IoU (ties included, IoU > 0) is positive too;
2. positive-fraction sampling (Faster R-CNN): at most ``int(num_samples * pos_fraction)``
   positives, drawn at random with ``generator``;
3. object balancing, at most ``k = max_pos_per_gt`` positives per GT:
   ``"paper"`` keeps each positive on its own argmax GT and, per GT, the ``k`` with the highest
   IoU (the dynamic threshold ``max(tau, k-th IoU)``); ``"deta_code"`` reproduces the released
   ``sample_topk_per_gt``: a GT with ``c`` positives takes the ``min(c, k)`` predictions of
   highest IoU with it among *all* predictions (one prediction may then serve two GTs, and a
   GT's own positive may be dropped).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from deepmot.matching.base import validate_input
from deepmot.matching.costs import pairwise_iou_cxcywh
from deepmot.matching.types import Assignment, MatchInput

__all__ = ["IoUAssigner", "iou_labels", "assign_single"]


def iou_labels(iou: Tensor, pos_thr: float, neg_thr: float | None, low_quality: bool,
               compat: bool = False) -> tuple[Tensor, Tensor]:
    """Argmax GT and label per prediction from a ``(G, Np)`` IoU.

    Returns ``matches`` (Np,) int64 (argmax GT, 0 when G = 0) and ``labels`` (Np,) int64:
    1 positive, 0 negative, -1 ignored. Low-quality matches (``low_quality``) make positive
    every prediction attaining a GT's maximum IoU; ``compat`` (the released code) includes GT
    whose maximum IoU is 0, otherwise they are skipped.
    """
    g, n = iou.shape
    if g == 0 or n == 0:
        return torch.zeros(n, dtype=torch.int64, device=iou.device), torch.zeros(n, dtype=torch.int64, device=iou.device)
    best, matches = iou.max(dim=0)
    labels = torch.ones(n, dtype=torch.int64, device=iou.device)
    low = -math.inf if neg_thr is None else neg_thr
    labels[best < pos_thr] = -1
    labels[best < low] = 0
    if neg_thr is None:
        labels[best < pos_thr] = 0
    if low_quality:
        top = iou.max(dim=1, keepdim=True).values
        hit = iou == top
        if not compat:
            hit &= top > 0
        labels[hit.any(0)] = 1
    return matches, labels


def _sample(labels: Tensor, num_samples: int, pos_fraction: float, generator: torch.Generator | None
            ) -> tuple[Tensor, Tensor]:
    """Faster R-CNN sampling: random positives (label 1) up to the cap, negatives (0) to fill."""
    pos = torch.nonzero(labels == 1, as_tuple=True)[0]
    neg = torch.nonzero(labels == 0, as_tuple=True)[0]
    n_pos = min(pos.numel(), int(num_samples * pos_fraction))
    n_neg = min(neg.numel(), num_samples - n_pos)
    perm_pos = torch.randperm(pos.numel(), generator=generator)[:n_pos].to(pos.device)
    perm_neg = torch.randperm(neg.numel(), generator=generator)[:n_neg].to(neg.device)
    return pos[perm_pos], neg[perm_neg]


def assign_single(iou: Tensor, *, pos_thr: float, neg_thr: float | None = None, low_quality: bool = True,
                  max_pos_per_gt: int | None = 4, pos_fraction: float | None = None,
                  num_samples: int | None = None, balancing: Literal["paper", "deta_code"] = "paper",
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One image: ``iou`` (G, Np) -> ``(pos_pred, pos_gt, ignore)``.

    ``pos_pred``/``pos_gt`` int64 pairs, sorted by GT then decreasing IoU (``"deta_code"`` may
    repeat a prediction); ``ignore`` (Np,) bool: ignore-band predictions and, when sampling,
    negatives left out by the sampler (all False in ``"deta_code"`` mode, whose loss treats every
    non-positive as background).
    """
    g, n = iou.shape
    dev = iou.device
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    compat = balancing == "deta_code"
    matches, labels = iou_labels(iou, pos_thr, neg_thr, low_quality, compat=compat)
    ignore = torch.zeros(n, dtype=torch.bool, device=dev)
    if g == 0 or n == 0:
        return empty, empty, ignore
    if not compat:
        ignore = labels == -1
    if num_samples is not None and pos_fraction is not None:
        pos, neg = _sample(labels, num_samples, pos_fraction, generator)
        if not compat:
            kept = torch.zeros(n, dtype=torch.bool, device=dev)
            kept[pos] = True
            kept[neg] = True
            ignore = ~kept
    else:
        pos = torch.nonzero(labels == 1, as_tuple=True)[0]
    gts = matches[pos]
    if max_pos_per_gt is None:
        order = torch.argsort(gts * (n + 1) + pos, stable=True)
        return pos[order], gts[order], ignore & ~_flag(pos, n, dev)
    k = int(max_pos_per_gt)
    out_p, out_g = [], []
    for gt in torch.unique(gts).tolist():
        mine = torch.sort(pos[gts == gt]).values
        if compat:
            top = torch.topk(iou[gt], min(k, n)).indices[: mine.numel()]
        else:
            # The k positives of highest IoU with their own GT; ties by prediction index.
            top = mine[torch.sort(-iou[gt, mine], stable=True).indices[:k]]
        out_p.append(top)
        out_g.append(torch.full_like(top, gt))
    if not out_p:
        return empty, empty, ignore
    pos_p, pos_g = torch.cat(out_p), torch.cat(out_g)
    if not compat:
        # Positives dropped by balancing become negatives; they are not ignored.
        ignore = ignore & ~_flag(pos_p, n, dev)
    return pos_p, pos_g, ignore


def _flag(idx: Tensor, n: int, dev: torch.device) -> Tensor:
    f = torch.zeros(n, dtype=torch.bool, device=dev)
    f[idx] = True
    return f


class IoUAssigner:
    """DETA / RPN-style one-to-many assignment on IoU with ``ref_boxes`` (anchors or
    proposals; ``pred_boxes`` when ``use_ref_boxes=False`` or they are absent).

    Returns an :class:`Assignment` whose rows are one-hot (positive -> its GT, everything else
    -> background) and ``ignore`` marks predictions to leave out of the classification loss. In
    ``"deta_code"`` mode a prediction serving two GTs splits its mass between them
    (``hard=False``). ``info["num_pos"]`` (B,) counts positive pairs. The ``cost`` argument of
    the call is ignored (the assignment depends on IoU only).
    """

    def __init__(self, pos_thr: float = 0.6, neg_thr: float | None = None, *, low_quality: bool = True,
                 max_pos_per_gt: int | None = 4, pos_fraction: float | None = 0.25, num_samples: int | None = None,
                 balancing: Literal["paper", "deta_code"] = "paper", use_ref_boxes: bool = True,
                 generator: torch.Generator | None = None):
        if balancing not in ("paper", "deta_code"):
            raise ValueError(f"balancing must be 'paper' or 'deta_code', got {balancing!r}")
        if neg_thr is not None and neg_thr > pos_thr:
            raise ValueError(f"neg_thr={neg_thr} must be <= pos_thr={pos_thr}")
        if max_pos_per_gt is not None and max_pos_per_gt < 1:
            raise ValueError("max_pos_per_gt must be >= 1 or None")
        self.pos_thr, self.neg_thr, self.low_quality = float(pos_thr), neg_thr, bool(low_quality)
        self.max_pos_per_gt, self.pos_fraction, self.num_samples = max_pos_per_gt, pos_fraction, num_samples
        self.balancing, self.use_ref_boxes, self.generator = balancing, bool(use_ref_boxes), generator

    @classmethod
    def deta_stage1(cls, **kw) -> "IoUAssigner":
        """DETA stage 1 (anchors): IoU >= 0.7 positive, < 0.3 negative, k = 4, 256 samples at 0.5."""
        args = dict(pos_thr=0.7, neg_thr=0.3, max_pos_per_gt=4, pos_fraction=0.5, num_samples=256)
        return cls(**{**args, **kw})

    @classmethod
    def deta_stage2(cls, num_queries: int, **kw) -> "IoUAssigner":
        """DETA stage 2 (proposals): IoU >= 0.6, k = 4, ``num_queries`` samples at fraction 0.25."""
        args = dict(pos_thr=0.6, neg_thr=None, max_pos_per_gt=4, pos_fraction=0.25, num_samples=int(num_queries))
        return cls(**{**args, **kw})

    def assign_iou(self, iou: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One image's ``(G, Np)`` IoU -> ``(pos_pred, pos_gt, ignore)`` (see :func:`assign_single`)."""
        return assign_single(iou, pos_thr=self.pos_thr, neg_thr=self.neg_thr, low_quality=self.low_quality,
                             max_pos_per_gt=self.max_pos_per_gt, pos_fraction=self.pos_fraction,
                             num_samples=self.num_samples, balancing=self.balancing, generator=self.generator)

    @torch.no_grad()
    def __call__(self, inp: MatchInput, cost: Tensor | None = None) -> Assignment:
        """Assign every image of ``inp`` -> :class:`Assignment` (B, Np, G+1)."""
        validate_input(inp)
        boxes = inp.ref_boxes if (self.use_ref_boxes and inp.ref_boxes is not None) else inp.pred_boxes
        pred_valid, gt_valid = inp.valid_preds(), inp.gt_mask.to(torch.bool)
        for name, t, valid in (("pred_boxes" if boxes is inp.pred_boxes else "ref_boxes", boxes, pred_valid),
                               ("gt_boxes", inp.gt_boxes, gt_valid)):
            bad = valid & ~torch.isfinite(t.detach()).all(-1)
            if bad.any():  # an infinite coordinate would give IoU 0 and pass silently
                b, i = (int(v) for v in torch.nonzero(bad)[0])
                raise ValueError(f"IoUAssigner: {name}[{b}, {i}] is not finite: {t[b, i].tolist()}")
        bsz, n, g = inp.batch_size, inp.num_preds, inp.num_gt
        iou = pairwise_iou_cxcywh(boxes.detach().float(), inp.gt_boxes.detach().float())  # (B, Np, G)
        if not torch.isfinite(iou[pred_valid[:, :, None] & gt_valid[:, None, :]]).all():
            raise ValueError("IoUAssigner: non-finite IoU (NaN/inf in the boxes)")
        plan = torch.zeros((bsz, n, g + 1), dtype=torch.float32, device=boxes.device)
        ignore = torch.zeros((bsz, n), dtype=torch.bool, device=boxes.device)
        num_pos = torch.zeros(bsz, dtype=torch.int64, device=boxes.device)
        hard = True
        for b in range(bsz):
            pi, gi = torch.nonzero(pred_valid[b], as_tuple=True)[0], torch.nonzero(gt_valid[b], as_tuple=True)[0]
            p, q, ign = self.assign_iou(iou[b][pi][:, gi].T)
            p, q = pi[p], gi[q]
            plan[b, p, q] = 1.0
            ignore[b, pi] = ign
            num_pos[b] = p.numel()
        mass = plan[..., :g].sum(-1, keepdim=True)
        if mass.numel() and mass.max() > 1:
            hard = False
            plan[..., :g] = plan[..., :g] / mass.clamp(min=1.0)
        plan[..., g] = (pred_valid & (mass[..., 0] == 0)).to(torch.float32)
        gt_mass = plan[..., :g].sum(1)
        info = {"num_pos": num_pos, "num_unmatched_gt": ((gt_mass == 0) & gt_valid).sum(1)}
        return Assignment(plan=plan, gt_mask=gt_valid, pred_mask=pred_valid, ignore=ignore & pred_valid,
                          cost=None, hard=hard, info=info)
