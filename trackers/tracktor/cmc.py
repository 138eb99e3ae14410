"""Camera-motion compensation: OpenCV's ECC alignment between consecutive frames, applied to boxes.

:func:`ecc_warp` estimates the 2 x 3 warp ``W`` with ``current(W(p)) ~ previous(p)`` (Evangelidis &
Psarakis, "Parametric image alignment using enhanced correlation coefficient maximization", PAMI
2008; Tracktor aligns every frame this way, Euclidean model, 100 iterations, eps 1e-5), so a point
``p`` of the previous frame lies at ``W @ [p, 1]`` in the current one; :func:`warp_boxes` moves boxes
with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["ecc_warp", "warp_boxes"]

_MODES = {"euclidean": "MOTION_EUCLIDEAN", "affine": "MOTION_AFFINE", "translation": "MOTION_TRANSLATION"}


def ecc_warp(prev_gray: np.ndarray, cur_gray: np.ndarray, mode: str = "euclidean", iterations: int = 100,
             eps: float = 1e-5, scale: float = 1.0) -> np.ndarray:
    """The ``(2, 3)`` float32 warp from ``prev_gray`` to ``cur_gray`` (uint8 ``(H, W)`` frames, same
    size), estimated on frames resized by ``scale`` (translation rescaled back to full pixels).
    Returns the identity when ECC does not converge."""
    import cv2

    if prev_gray.shape != cur_gray.shape:
        raise ValueError(f"ecc_warp: frames differ in size: {prev_gray.shape} vs {cur_gray.shape}")
    a, b = prev_gray, cur_gray
    if scale != 1.0:
        size = (max(8, round(a.shape[1] * scale)), max(8, round(a.shape[0] * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, int(iterations), float(eps))
    try:
        _, warp = cv2.findTransformECC(a, b, warp, getattr(cv2, _MODES[mode]), criteria, None, 1)
    except cv2.error:  # no convergence (e.g. a flat frame): assume a still camera
        return np.eye(2, 3, dtype=np.float32)
    if scale != 1.0:
        warp[:, 2] /= scale
    return warp


def warp_boxes(boxes: Tensor, warp: np.ndarray) -> Tensor:
    """Boxes ``(..., 4)`` x1, y1, x2, y2 with both corners moved by the ``(2, 3)`` ``warp``."""
    if boxes.numel() == 0:
        return boxes
    w = torch.as_tensor(warp, dtype=boxes.dtype, device=boxes.device)
    flat = boxes.reshape(-1, 2, 2)                                       # corners (K, 2, [x, y])
    ones = torch.ones(flat.shape[:2] + (1,), dtype=boxes.dtype, device=boxes.device)
    moved = torch.cat([flat, ones], -1) @ w.T                            # (K, 2, 2)
    return moved.reshape(boxes.shape)
