"""The interchange types of :mod:`deepmot.matching`: what a matcher reads and what it returns.

:class:`MatchInput` holds one batch of predictions and padded ground truth; :class:`Assignment`
holds a *plan* over predictions x (GT + background): ``plan[b, i, j]`` is the mass prediction
``i`` of image ``b`` sends to GT ``j`` (``j < G``) or to the background column ``j = G``. Hard
matchers give one-hot rows, optimal transport gives soft rows; every loss consumes the plan, so
every matcher feeds every loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["MatchInput", "Assignment", "Matcher", "PRED_BACKGROUND", "PRED_MASKED"]

#: Value of :meth:`Assignment.pred_to_gt` for a prediction sent to the background column.
PRED_BACKGROUND = -1
#: Value of :meth:`Assignment.pred_to_gt` for a masked (invalid) prediction.
PRED_MASKED = -2


@dataclass
class MatchInput:
    """One batch of predictions and padded ground truth.

    ``pred_logits`` (B, Np, C) float: C = K (sigmoid heads) or K+1 (softmax, background last).
    ``pred_boxes`` (B, Np, 4) normalised cx, cy, w, h. ``gt_labels`` (B, G) int64, padded (values
    at padded slots ignored). ``gt_boxes`` (B, G, 4) normalised cx, cy, w, h. ``gt_mask`` (B, G)
    bool, True = real GT (need not be a prefix). ``pred_mask`` (B, Np) bool, False = not
    matchable (None = all valid). ``ref_boxes`` (B, Np, 4) cxcywh anchors/proposals for IoU
    assigners. ``fixed_gt`` (B, Np) int64 pre-bound GT per prediction, -1 = free (None = all
    free). ``extras``: anything else a custom cost needs (embeddings, track ids).
    """

    pred_logits: Tensor
    pred_boxes: Tensor
    gt_labels: Tensor
    gt_boxes: Tensor
    gt_mask: Tensor
    pred_mask: Tensor | None = None
    ref_boxes: Tensor | None = None
    fixed_gt: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.pred_boxes.shape[0])

    @property
    def num_preds(self) -> int:
        """Np (padded)."""
        return int(self.pred_boxes.shape[1])

    @property
    def num_gt(self) -> int:
        """G (padded)."""
        return int(self.gt_boxes.shape[1])

    def valid_preds(self) -> Tensor:
        """(B, Np) bool mask of matchable predictions (all True when ``pred_mask`` is None)."""
        if self.pred_mask is None:
            return torch.ones(self.pred_boxes.shape[:2], dtype=torch.bool, device=self.pred_boxes.device)
        return self.pred_mask.to(torch.bool)

    @classmethod
    def from_lists(cls, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]],
                   **kw) -> "MatchInput":
        """Build from DETR-style targets ``[{"labels": (n_b,), "boxes": (n_b, 4)}, ...]``.

        GT are padded to ``G = max n_b`` (at least 0) with a prefix ``gt_mask``.
        """
        b = pred_boxes.shape[0]
        if len(targets) != b:
            raise ValueError(f"{len(targets)} targets for a batch of {b} images")
        g = max((int(t["boxes"].shape[0]) for t in targets), default=0)
        dev = pred_boxes.device
        labels = torch.zeros((b, g), dtype=torch.int64, device=dev)
        boxes = torch.zeros((b, g, 4), dtype=pred_boxes.dtype, device=dev)
        mask = torch.zeros((b, g), dtype=torch.bool, device=dev)
        for k, t in enumerate(targets):
            n = int(t["boxes"].shape[0])
            labels[k, :n] = t["labels"].to(dev)
            boxes[k, :n] = t["boxes"].to(device=dev, dtype=pred_boxes.dtype)
            mask[k, :n] = True
        return cls(pred_logits, pred_boxes, labels, boxes, mask, **kw)


@dataclass
class Assignment:
    """A plan over predictions x (GT + background), batched with padding masks.

    ``plan`` (B, Np, G+1) float32, detached: ``[..., :G]`` prediction-to-GT mass, ``[..., G]``
    background. Valid rows sum to 1 (within the Sinkhorn tolerance for soft plans); rows of
    masked predictions and columns of padded GT are 0. ``gt_mask`` (B, G) bool, ``pred_mask``
    (B, Np) bool. ``ignore`` (B, Np) bool: predictions excluded from the classification loss
    (IoU ignore band), or None. ``cost`` (B, Np, G+1): the detached cost that was solved, or
    None. ``hard``: True when every valid row is one-hot. ``info``: per-image diagnostics such as
    ``num_unmatched_gt`` (B,), ``n_iter`` (B,), ``marginal_err`` (B,).
    """

    plan: Tensor
    gt_mask: Tensor
    pred_mask: Tensor
    ignore: Tensor | None = None
    cost: Tensor | None = None
    hard: bool = True
    info: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_gt_slots(self) -> int:
        """G (padded number of GT columns, background excluded)."""
        return int(self.plan.shape[-1]) - 1

    def pred_to_gt(self) -> Tensor:
        """(B, Np) int64: argmax over GT and background per prediction.

        ``-1`` (:data:`PRED_BACKGROUND`) = background, ``-2`` (:data:`PRED_MASKED`) = masked
        prediction. Ties go to the lowest index (GT before background).
        """
        g = self.num_gt_slots
        idx = self.plan.argmax(dim=-1)
        out = torch.where(idx == g, torch.full_like(idx, PRED_BACKGROUND), idx)
        return torch.where(self.pred_mask, out, torch.full_like(out, PRED_MASKED))

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(pred_idx, gt_idx)`` int64 (CPU), pred_idx ascending; DETR-compatible.

        For hard plans these are the matched pairs; for soft plans, each valid prediction's
        argmax GT (background excluded). One-to-many plans may repeat a GT index.
        """
        p2g = self.pred_to_gt().cpu()
        out = []
        for row in p2g:
            pred = torch.nonzero(row >= 0, as_tuple=False).flatten()
            out.append((pred.to(torch.int64), row[pred].to(torch.int64)))
        return out

    def num_pos(self) -> Tensor:
        """(B,) float: total foreground mass ``plan[..., :G].sum((1, 2))``."""
        return self.plan[..., :-1].sum(dim=(1, 2))

    def positive_targets(self, iou: Tensor) -> Tensor:
        """(B, Np) float: ``sum_j plan[b, i, j] * iou[b, i, j]`` over GT columns.

        ``iou`` (B, Np, G): e.g. the IoU of each (detached) predicted box with each GT; used as
        continuous targets of ranking losses (0 = negative).
        """
        if iou.shape != self.plan[..., :-1].shape:
            raise ValueError(f"iou has shape {tuple(iou.shape)}, expected {tuple(self.plan[..., :-1].shape)}")
        return (self.plan[..., :-1] * iou.to(self.plan.dtype)).sum(dim=-1)

    def to(self, device: torch.device | str) -> "Assignment":
        """A copy with every tensor on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Assignment(mv(self.plan), mv(self.gt_mask), mv(self.pred_mask), mv(self.ignore),
                          mv(self.cost), self.hard, {k: v.to(device) for k, v in self.info.items()})


@runtime_checkable
class Matcher(Protocol):
    """Anything that maps a :class:`MatchInput` (and optionally a precomputed (B, Np, G+1)
    cost) to an :class:`Assignment`, without gradient."""

    def __call__(self, inp: MatchInput, cost: Tensor | None = None) -> Assignment: ...
