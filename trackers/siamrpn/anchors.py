"""Anchor shapes, the tracker's anchor grid and the cosine window (PySOT spec §3.1-3.3, §9.4).

Everything here is a small numpy array computed once per tracker. The flattening order of every
per-anchor array is ``(anchor, y, x)``: row ``a * S * S + y * S + x``, which is also how the
network's ``cls``/``loc`` maps are flattened (``cls.view(B, 2, A * S * S)``).

Two flavours of grid exist:

* ``"pysot"`` (PySOT's ``SiamRPNTracker``): grid origin ``-(S // 2) * stride`` crop pixels from
  the centre of the search crop, so the centre cell sits exactly on the crop centre.
* ``"dasiamrpn"`` (DaSiamRPN / DeepMOT v1 run under Python 3): origin ``-(S / 2) * stride`` with
  true division, i.e. half a stride further up-left (``-76`` instead of ``-72`` for ``S = 19``).
  DeepMOT's published numbers were produced with this shifted grid.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

__all__ = ["Flavour", "anchor_shapes", "grid_origin", "anchor_grid", "cosine_window", "score_size"]

Flavour = Literal["pysot", "dasiamrpn"]


def anchor_shapes(stride: int, ratios: Sequence[float], scales: Sequence[float]) -> np.ndarray:
    """Anchor ``(w, h)`` in crop pixels, shape ``(A, 2)`` float32, ``A = len(ratios) * len(scales)``.

    For each ratio ``r`` (outer loop) and scale ``s`` (inner loop): ``ws = int(sqrt(stride**2 / r))``,
    ``hs = int(ws * r)``, anchor ``(ws * s, hs * s)``. With stride 8, ratios
    ``[0.33, 0.5, 1, 2, 3]`` and scale 8: (104,32), (88,40), (64,64), (40,80), (32,96).
    """
    if stride <= 0 or not ratios or not scales:
        raise ValueError(f"anchor_shapes needs stride > 0 and non-empty ratios/scales, got "
                         f"stride={stride}, ratios={list(ratios)}, scales={list(scales)}")
    area = float(stride * stride)
    shapes = []
    for r in ratios:
        ws = int(np.sqrt(area / r))
        hs = int(ws * r)
        for s in scales:
            shapes.append((ws * s, hs * s))
    return np.asarray(shapes, dtype=np.float32)


def score_size(instance_size: int, exemplar_size: int, stride: int, base_size: int) -> int:
    """Side ``S`` of the score map: ``(instance - exemplar) // stride + 1 + base_size``."""
    return (instance_size - exemplar_size) // stride + 1 + base_size


def grid_origin(size: int, stride: int, flavour: Flavour = "pysot") -> float:
    """Offset (crop pixels, relative to the crop centre) of grid cell 0 for an ``S = size`` map."""
    if flavour == "pysot":
        return float(-(size // 2) * stride)
    if flavour == "dasiamrpn":
        return float(-(size / 2) * stride)
    raise ValueError(f"unknown anchor flavour {flavour!r}; expected 'pysot' or 'dasiamrpn'")


def anchor_grid(size: int, stride: int, ratios: Sequence[float], scales: Sequence[float],
                flavour: Flavour = "pysot") -> np.ndarray:
    """All anchors of an ``S x S`` map as ``(A * S * S, 4)`` float32 ``cx, cy, w, h``.

    Centres are in crop pixels relative to the search-crop centre: ``cx = origin + stride * x``,
    ``cy = origin + stride * y``; rows are ordered ``(anchor, y, x)``.
    """
    shapes = anchor_shapes(stride, ratios, scales)                     # (A, 2)
    offsets = grid_origin(size, stride, flavour) + stride * np.arange(size, dtype=np.float64)
    num = shapes.shape[0]
    out = np.empty((num, size, size, 4), dtype=np.float32)
    out[..., 0] = offsets[None, None, :]
    out[..., 1] = offsets[None, :, None]
    out[..., 2] = shapes[:, 0, None, None]
    out[..., 3] = shapes[:, 1, None, None]
    return out.reshape(-1, 4)


def cosine_window(size: int, num_anchors: int) -> np.ndarray:
    """Cosine (Hann) window ``outer(hanning(S), hanning(S))`` tiled per anchor: ``(A * S * S,)`` float64."""
    han = np.hanning(size)
    return np.tile(np.outer(han, han).ravel(), num_anchors)
