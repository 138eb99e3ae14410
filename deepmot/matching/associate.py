"""Tracking-by-detection association at inference: tracks x detections on IoU."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from deepmot.boxes import box_iou
from deepmot.matching.linear import gated_linear_assignment

__all__ = ["associate"]


def associate(track_boxes: Tensor, det_boxes: Tensor, iou_threshold: float = 0.3,
              method: Literal["hungarian", "greedy"] = "hungarian") -> tuple[Tensor, Tensor]:
    """Match ``(N, 4)`` track boxes to ``(M, 4)`` detection boxes (pixels, x1, y1, x2, y2).

    A pair may match only if ``IoU >= iou_threshold``. ``"hungarian"``: among allowed pairs, the
    matching with the most pairs and, among those, the smallest total ``1 - IoU`` (the CLEAR-MOT
    rule, via :func:`~deepmot.matching.linear.gated_linear_assignment`). ``"greedy"``: repeatedly
    take the allowed pair of highest IoU (ties: lowest track, then detection index). Returns
    ``(track_idx, det_idx)``, int64 CPU tensors of equal length, sorted by track index.
    """
    for name, t in (("track_boxes", track_boxes), ("det_boxes", det_boxes)):
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"{name} must be (K, 4) x1, y1, x2, y2 boxes, got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if method not in ("hungarian", "greedy"):
        raise ValueError(f"method must be 'hungarian' or 'greedy', got {method!r}")
    empty = torch.zeros(0, dtype=torch.int64)
    if track_boxes.shape[0] == 0 or det_boxes.shape[0] == 0:
        return empty, empty.clone()
    iou = box_iou(track_boxes.detach().double(), det_boxes.detach().double()).cpu().numpy()
    forbidden = iou < iou_threshold
    if method == "hungarian":
        rows, cols = gated_linear_assignment(1.0 - iou, forbidden)
    else:
        rows, cols = _greedy(iou, forbidden)
    return torch.from_numpy(rows), torch.from_numpy(cols)


def _greedy(iou: np.ndarray, forbidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.nonzero(~forbidden)
    order = np.lexsort((c, r, -iou[r, c]))
    used_r, used_c, rows, cols = set(), set(), [], []
    for k in order:
        if r[k] in used_r or c[k] in used_c:
            continue
        used_r.add(r[k])
        used_c.add(c[k])
        rows.append(r[k])
        cols.append(c[k])
    rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    srt = np.argsort(rows_a, kind="stable")
    return rows_a[srt], cols_a[srt]
