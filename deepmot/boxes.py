"""Box conventions, IoU and the DeepMOT track-to-GT distance.

Every box in memory is a float tensor in pixels, ``x1, y1, x2, y2`` with ``x2 = x + w``
(torchvision's convention, no +1). MOTChallenge files hold 1-based ``x, y, w, h``; they are
read and written unchanged, so converting with :func:`xywh_to_xyxy` keeps the 1-based origin
(IoU and the DeepMOT distance do not care about a common shift).

The DeepMOT distance and the gating rule defined here are the *one* convention shared by the
DHN training data (:mod:`deepmot.dhn.data`), the DHN targets and the criterion
(:mod:`deepmot.criterion`):

* ``deepmot_distance(tracks, gt, image_size)`` is
  ``0.5 * ((1 - exp(-5 * |centre difference| / image_diagonal)) + (1 - IoU))``, in ``[0, 1)``.
* A pair is *allowed* (may match) when ``IoU >= iou_threshold``; forbidden pairs are shown to
  the DHN as ``d + GATE_OFFSET`` (so every forbidden entry is ``>= 1`` and every allowed one
  ``< 1``) and are never matched by the exact (gated Hungarian) targets.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

__all__ = [
    "GATE_OFFSET",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "box_iou",
    "deepmot_distance",
    "gate_distance",
    "forbidden_mask",
]

#: Added to the distance of forbidden (gated) pairs before they enter the DHN. Allowed pairs
#: have ``d < 1``, so ``d + 1 >= 1`` marks a forbidden pair unambiguously.
GATE_OFFSET = 1.0


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x, y, w, h`` -> ``(..., 4)`` ``x1, y1, x2, y2`` with ``x2 = x + w`` (pixels)."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x1, y1, x2, y2`` -> ``(..., 4)`` ``x, y, w, h`` (pixels)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre ``cx, cy, w, h`` -> ``(..., 4)`` ``x1, y1, x2, y2`` (same units)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x1, y1, x2, y2`` -> ``(..., 4)`` centre ``cx, cy, w, h`` (same units)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``; differentiable.

    Thin wrapper over :func:`torchvision.ops.box_iou` that also accepts empty inputs and
    batched ``(B, N, 4)``/``(B, M, 4)`` inputs (-> ``(B, N, M)``).
    """
    if boxes1.dim() == 3:
        return torch.stack([box_iou(a, b) for a, b in zip(boxes1, boxes2)])
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        return boxes1.new_zeros((boxes1.shape[0], boxes2.shape[0]))
    return _tv_box_iou(boxes1, boxes2)


def deepmot_distance(tracks: Tensor, gt: Tensor, image_size: tuple[float, float] | Tensor) -> Tensor:
    """DeepMOT distance between ``(N, 4)`` track boxes and ``(M, 4)`` GT boxes -> ``(N, M)``.

    ``d = 0.5 * ((1 - exp(-5 * ||c_track - c_gt|| / diag)) + (1 - IoU))`` with box centres ``c``
    and ``diag = sqrt(W**2 + H**2)`` of ``image_size = (W, H)`` in pixels. Values lie in
    ``[0, 1)``; small means close. Differentiable w.r.t. both box sets (a ``1e-12`` under the
    square root keeps the gradient finite at zero centre distance).
    """
    w, h = (float(v) for v in image_size)
    diag = (w * w + h * h) ** 0.5
    ct = xyxy_to_cxcywh(tracks)[:, None, :2]
    cg = xyxy_to_cxcywh(gt)[None, :, :2]
    centre = torch.sqrt(((ct - cg) / diag).pow(2).sum(-1) + 1e-12)
    return 0.5 * ((1.0 - torch.exp(-5.0 * centre)) + (1.0 - box_iou(tracks, gt)))


def forbidden_mask(iou: Tensor, iou_threshold: float | None) -> Tensor:
    """Boolean mask of pairs that may not match: ``iou < iou_threshold`` (all False if None)."""
    if iou_threshold is None:
        return torch.zeros_like(iou, dtype=torch.bool)
    return iou < iou_threshold


def gate_distance(distance: Tensor, forbidden: Tensor) -> Tensor:
    """Distance as the DHN sees it: ``distance + GATE_OFFSET`` where ``forbidden`` is True.

    Any shape; differentiable w.r.t. ``distance`` (the offset is a constant).
    """
    return distance + GATE_OFFSET * forbidden.to(distance.dtype)
