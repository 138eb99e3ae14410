"""Context crops with mean padding, numerically identical to PySOT's ``get_subwindow`` (spec §3.4).

PySOT pads the *whole image* with the channel average whenever the crop leaves the image, then
slices and resizes. The result only depends on the crop window, so here we build just the
``original_sz x original_sz`` window: fill it with the (uint8-truncated) channel average, paste
the part that overlaps the image, and resize it once with ``cv2.resize`` (INTER_LINEAR) straight
into a preallocated batch array. The bytes fed to ``cv2.resize`` are the same as PySOT's, so the
crops are identical.

Rounding of the window origin: PySOT uses ``floor(p - c + 0.5)`` (round half up) with
``c = (original_sz + 1) / 2``; DaSiamRPN (DeepMOT v1) uses Python 3 ``round(p - c)`` (half to even).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from trackers.siamrpn.anchors import Flavour

__all__ = ["channel_average", "crop_window", "crop_patch", "get_subwindow", "crop_batch"]


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected a BGR uint8 image of shape (H, W, 3), got "
                         f"{type(img).__name__} {getattr(img, 'dtype', None)} {getattr(img, 'shape', None)}")


def channel_average(img: np.ndarray) -> np.ndarray:
    """Per-channel mean of a BGR uint8 image ``(H, W, 3)`` -> ``(3,)`` float64 (PySOT's padding colour).

    Equal to ``img.mean(axis=(0, 1))`` bit for bit (the float64 sum of uint8 values is exact either
    way, then one division), but ~1000x faster through ``cv2.sumElems``."""
    _check_image(img)
    return np.asarray(cv2.sumElems(img)[:3], dtype=np.float64) / float(img.shape[0] * img.shape[1])


def crop_window(pos: Sequence[float], original_sz: int, flavour: Flavour = "pysot") -> tuple[int, int]:
    """Top-left corner ``(xmin, ymin)`` (integer image pixels) of the square crop of side ``original_sz``
    centred on ``pos = (cx, cy)``; the window spans ``xmin .. xmin + original_sz - 1``."""
    c = (original_sz + 1) / 2
    if flavour == "pysot":
        return math.floor(pos[0] - c + 0.5), math.floor(pos[1] - c + 0.5)
    if flavour == "dasiamrpn":
        return round(pos[0] - c), round(pos[1] - c)
    raise ValueError(f"unknown crop flavour {flavour!r}; expected 'pysot' or 'dasiamrpn'")


def crop_patch(img: np.ndarray, pos: Sequence[float], original_sz: int, avg_chans: Sequence[float],
               flavour: Flavour = "pysot") -> np.ndarray:
    """The un-resized ``(original_sz, original_sz, 3)`` uint8 window around ``pos``; outside the image
    it holds ``avg_chans`` truncated to uint8 (as PySOT's padded canvas). Returns a view of ``img``
    when the window lies inside the image."""
    original_sz = int(original_sz)
    if original_sz < 1:
        raise ValueError(f"crop size must be >= 1 pixel, got {original_sz}")
    h, w = img.shape[:2]
    x0, y0 = crop_window(pos, original_sz, flavour)
    x1, y1 = x0 + original_sz, y0 + original_sz
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return img[y0:y1, x0:x1]
    patch = np.empty((original_sz, original_sz, 3), dtype=np.uint8)
    patch[...] = np.asarray(avg_chans, dtype=np.float64).astype(np.uint8)   # truncation, as PySOT
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 < ix1 and iy0 < iy1:
        patch[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = img[iy0:iy1, ix0:ix1]
    return patch


def _resize_into(patch: np.ndarray, model_sz: int, out: np.ndarray) -> None:
    if patch.shape[0] == model_sz:
        out[...] = patch
    else:
        cv2.resize(patch, (model_sz, model_sz), dst=out)


def get_subwindow(img: np.ndarray, pos: Sequence[float], model_sz: int, original_sz: int,
                  avg_chans: Sequence[float], flavour: Flavour = "pysot") -> Tensor:
    """PySOT's ``get_subwindow``: ``(1, 3, model_sz, model_sz)`` float32 BGR 0..255 crop of ``img``
    (BGR uint8 ``(H, W, 3)``) centred on ``pos = (cx, cy)`` with side ``original_sz`` image pixels."""
    return crop_batch(img, [pos], model_sz, [original_sz], [avg_chans], flavour)


def crop_batch(img: np.ndarray, positions: Sequence[Sequence[float]] | np.ndarray, model_sz: int,
               original_sizes: Sequence[int] | np.ndarray, avg_chans: Sequence[Sequence[float]] | np.ndarray,
               flavour: Flavour = "pysot") -> Tensor:
    """Crops of N targets from one image: ``(N, 3, model_sz, model_sz)`` float32 BGR 0..255.

    ``positions`` ``(N, 2)`` centres ``(cx, cy)`` in image pixels, ``original_sizes`` ``(N,)`` integer
    window sides, ``avg_chans`` ``(N, 3)`` per-target padding colours (float, truncated to uint8).
    Each crop equals :func:`get_subwindow` for that target.
    """
    _check_image(img)
    n = len(positions)
    if len(original_sizes) != n or len(avg_chans) != n:
        raise ValueError(f"crop_batch got {n} positions, {len(original_sizes)} sizes and "
                         f"{len(avg_chans)} padding colours; they must match")
    out = np.empty((n, model_sz, model_sz, 3), dtype=np.uint8)
    for i in range(n):
        patch = crop_patch(img, positions[i], int(original_sizes[i]), avg_chans[i], flavour)
        _resize_into(patch, model_sz, out[i])
    x = torch.empty((n, 3, model_sz, model_sz), dtype=torch.float32)
    x.copy_(torch.from_numpy(out).permute(0, 3, 1, 2))  # HWC uint8 -> CHW float32 in one pass
    return x
