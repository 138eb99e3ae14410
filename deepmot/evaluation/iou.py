"""Pairwise IoU of MOTChallenge ``x, y, w, h`` boxes in float64 numpy, bit-identical to TrackEval.

TrackEval (the official MOTChallenge evaluator) converts ``x, y, w, h`` to corners with
``x2 = x + w`` (no +1), and treats boxes of area ``<= eps`` and unions ``<= eps`` as having zero
overlap. The same float64 operations in the same order are used here, so every IoU — and hence
every threshold decision at exactly 0.5 — equals TrackEval's to the last bit. (The torch
:func:`deepmot.boxes.box_iou` is for training; evaluation needs float64 and this exact formula.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["iou_xywh", "EPS"]

#: ``np.finfo(float).eps``: TrackEval's tolerance for "zero" areas and for the 0.5 threshold.
EPS = float(np.finfo(float).eps)


def _corners(xywh: np.ndarray) -> np.ndarray:
    out = np.array(xywh, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, 2] = out[:, 0] + out[:, 2]
    out[:, 3] = out[:, 1] + out[:, 3]
    return out


def iou_xywh(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` and ``(M, 4)`` ``x, y, w, h`` boxes (pixels) -> ``(N, M)`` float64 in [0, 1].

    Rows are ``boxes1`` (GT in the evaluator, as in TrackEval), columns ``boxes2`` (tracker boxes).
    Degenerate boxes (area ``<= eps``) have IoU 0 with everything.
    """
    a = _corners(boxes1)
    b = _corners(boxes2)
    # TrackEval takes the element-wise min/max of all four corners; only these two of each are used.
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    inter[area1 <= 0 + EPS, :] = 0
    inter[:, area2 <= 0 + EPS] = 0
    tiny = union <= 0 + EPS
    inter[tiny] = 0
    union[tiny] = 1
    return inter / union
