"""Pairwise matching costs between predictions and padded ground truth.

Every term maps a :class:`~deepmot.matching.types.MatchInput` to a ``(B, Np, G)`` cost (small =
good match), differentiable w.r.t. the predictions, with padded GT columns set to ``+inf``.
:class:`CompositeCost` sums weighted terms and appends the background column -> ``(B, Np, G+1)``.

Conventions: boxes are normalised ``cx, cy, w, h`` (DETR); classification heads are softmax with
background last (:class:`ClassProbCost`, :class:`NLLClassCost`) or sigmoid (:class:`FocalClassCost`).
Costs are computed in the dtype of ``pred_boxes`` promoted to at least float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import generalized_box_iou

from deepmot.boxes import cxcywh_to_xyxy
from deepmot.matching.types import MatchInput

__all__ = [
    "CostTerm",
    "ClassProbCost",
    "FocalClassCost",
    "NLLClassCost",
    "L1BoxCost",
    "GIoUCost",
    "IoUCost",
    "CompositeCost",
    "pairwise_iou_cxcywh",
    "pairwise_giou_cxcywh",
    "check_boxes",
]

# A harmless box put in padded GT slots so that no term sees garbage (their cost is +inf anyway).
_DUMMY_BOX = (0.5, 0.5, 1.0, 1.0)


class CostTerm(Protocol):
    """A weighted pairwise cost: ``MatchInput -> (B, Np, G)``."""

    weight: float

    def __call__(self, inp: MatchInput) -> Tensor: ...


def _dtype(inp: MatchInput) -> torch.dtype:
    return torch.promote_types(inp.pred_boxes.dtype, torch.float32)


def check_boxes(boxes: Tensor, name: str, mask: Tensor | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` if any (masked-in) ``(..., 4)`` cxcywh box has a
    negative width or height (non-finite values are left to the matchers' NaN policy)."""
    b = boxes if mask is None else boxes[mask]
    if b.numel() == 0:
        return
    if (b[..., 2:] < 0).any():
        raise ValueError(f"{name} contains boxes with negative width or height")


def _safe_gt_boxes(inp: MatchInput, dtype: torch.dtype) -> Tensor:
    """GT boxes with padded slots replaced by a dummy box, as ``dtype``."""
    gt = inp.gt_boxes.to(dtype)
    dummy = gt.new_tensor(_DUMMY_BOX).expand_as(gt)
    return torch.where(inp.gt_mask[..., None], gt, dummy)


def _mask_gt(cost: Tensor, gt_mask: Tensor) -> Tensor:
    return cost.masked_fill(~gt_mask[:, None, :], math.inf)


def _batched(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor) -> Tensor:
    """Apply a 2-D pairwise box function to (B, N, 4) x (B, M, 4) -> (B, N, M)."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return a.new_zeros((a.shape[0], a.shape[1], b.shape[1]))
    return torch.stack([fn(x, y) for x, y in zip(a, b)])


def pairwise_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """IoU of (B, N, 4) and (B, M, 4) cxcywh boxes -> (B, N, M) (torchvision), differentiable."""
    return _batched(_tv_box_iou, cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


def pairwise_giou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """Generalised IoU of (B, N, 4) and (B, M, 4) cxcywh boxes -> (B, N, M), in [-1, 1]."""
    return _batched(generalized_box_iou, cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


def _gather_classes(values: Tensor, labels: Tensor, gt_mask: Tensor) -> Tensor:
    """values (B, Np, C), labels (B, G) -> (B, Np, G) = values[b, i, labels[b, j]]."""
    n_cls = values.shape[-1]
    lab = torch.where(gt_mask, labels, torch.zeros_like(labels))
    if gt_mask.any() and (lab.min() < 0 or lab.max() >= n_cls):
        raise ValueError(f"gt_labels must lie in [0, {n_cls}) for logits with {n_cls} classes")
    idx = lab[:, None, :].expand(-1, values.shape[1], -1)
    return torch.gather(values, 2, idx)


class ClassProbCost:
    """DETR's class cost ``-weight * softmax(logits)[c_j]`` (softmax head, background last)."""

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        prob = inp.pred_logits.to(_dtype(inp)).softmax(-1)
        return _mask_gt(-self.weight * _gather_classes(prob, inp.gt_labels, inp.gt_mask), inp.gt_mask)


class FocalClassCost:
    """Deformable-DETR/DETA focal class cost (sigmoid head), ``p = sigmoid(logit[c_j])``:

    ``weight * (alpha (1-p)^gamma (-log(p + 1e-8)) - (1-alpha) p^gamma (-log(1 - p + 1e-8)))``.
    """

    def __init__(self, weight: float = 2.0, alpha: float = 0.25, gamma: float = 2.0):
        self.weight, self.alpha, self.gamma = float(weight), float(alpha), float(gamma)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        p = _gather_classes(inp.pred_logits.to(_dtype(inp)).sigmoid(), inp.gt_labels, inp.gt_mask)
        pos = self.alpha * (1 - p) ** self.gamma * (-(p + 1e-8).log())
        neg = (1 - self.alpha) * p**self.gamma * (-(1 - p + 1e-8).log())
        return _mask_gt(self.weight * (pos - neg), inp.gt_mask)


class NLLClassCost:
    """Log-likelihood class cost of the assignment-aligned loss (softmax, background last):

    ``weight * (-log p_i(c_j) + bg_weight * log p_i(background))`` (eq. 6, generalised with a
    background weight). Uses ``log_softmax``, so it is finite for finite logits.
    """

    def __init__(self, weight: float = 1.0, bg_weight: float = 1.0):
        self.weight, self.bg_weight = float(weight), float(bg_weight)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        logp = inp.pred_logits.to(_dtype(inp)).log_softmax(-1)
        cost = -_gather_classes(logp, inp.gt_labels, inp.gt_mask) + self.bg_weight * logp[..., -1:]
        return _mask_gt(self.weight * cost, inp.gt_mask)


class L1BoxCost:
    """``weight * ||b_i - b_j||_1`` on normalised cxcywh boxes (``torch.cdist(p=1)``)."""

    def __init__(self, weight: float = 5.0):
        self.weight = float(weight)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        dt = _dtype(inp)
        pred, gt = inp.pred_boxes.to(dt), _safe_gt_boxes(inp, dt)
        if pred.shape[1] == 0 or gt.shape[1] == 0:
            d = pred.new_zeros((pred.shape[0], pred.shape[1], gt.shape[1]))
        else:
            d = torch.cdist(pred, gt, p=1)
        return _mask_gt(self.weight * d, inp.gt_mask)


class GIoUCost:
    """``weight * (offset - GIoU(b_i, b_j))``; offset 0 gives DETR's ``-GIoU`` (same argmin)."""

    def __init__(self, weight: float = 2.0, offset: float = 1.0):
        self.weight, self.offset = float(weight), float(offset)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        dt = _dtype(inp)
        giou = pairwise_giou_cxcywh(inp.pred_boxes.to(dt), _safe_gt_boxes(inp, dt))
        return _mask_gt(self.weight * (self.offset - giou), inp.gt_mask)


class IoUCost:
    """``weight * (1 - IoU(b_i, b_j))``, on ``ref_boxes`` (anchors/proposals) when
    ``use_ref_boxes`` and they are given, else on ``pred_boxes``."""

    def __init__(self, weight: float = 1.0, use_ref_boxes: bool = True):
        self.weight, self.use_ref_boxes = float(weight), bool(use_ref_boxes)

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G)."""
        dt = _dtype(inp)
        boxes = inp.ref_boxes if (self.use_ref_boxes and inp.ref_boxes is not None) else inp.pred_boxes
        iou = pairwise_iou_cxcywh(boxes.to(dt), _safe_gt_boxes(inp, dt))
        return _mask_gt(self.weight * (1.0 - iou), inp.gt_mask)


class CompositeCost:
    """Sum of cost terms plus a background column -> ``(B, Np, G+1)``.

    ``background``: a constant cost of sending a prediction to background (``None`` -> 0), or a
    callable ``MatchInput -> (B, Np)`` (e.g. a per-prediction background likelihood). Padded GT
    columns are ``+inf``; the result keeps the gradient of the terms (matchers detach it).
    """

    def __init__(self, terms: Sequence[CostTerm],
                 background: float | Callable[[MatchInput], Tensor] | None = None):
        if len(terms) == 0:
            raise ValueError("CompositeCost needs at least one term")
        self.terms = list(terms)
        self.background = background

    def pairwise(self, inp: MatchInput) -> Tensor:
        """The weighted sum of the terms, ``(B, Np, G)`` (no background column)."""
        total = self.terms[0](inp)
        for term in self.terms[1:]:
            total = total + term(inp)
        return total

    def __call__(self, inp: MatchInput) -> Tensor:
        """-> (B, Np, G+1), last column = background cost."""
        check_boxes(inp.pred_boxes, "pred_boxes", inp.valid_preds())
        check_boxes(inp.gt_boxes, "gt_boxes", inp.gt_mask.to(torch.bool))
        pair = self.pairwise(inp)
        if callable(self.background):
            bg = self.background(inp).to(pair.dtype)
            if bg.shape != pair.shape[:2]:
                raise ValueError(f"background cost has shape {tuple(bg.shape)}, expected {tuple(pair.shape[:2])}")
        else:
            value = 0.0 if self.background is None else float(self.background)
            bg = pair.new_full(pair.shape[:2], value)
        return torch.cat([pair, bg[..., None]], dim=-1)
