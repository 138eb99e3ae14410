"""Exact gated linear assignment: the one Hungarian solver every part of deepmot calls.

"Gated" means some pairs are forbidden. The result is the *maximum-cardinality* matching over
allowed pairs and, among those, the one of minimum total cost -- the matching CLEAR-MOT (and
py-motmetrics) counts as true positives. It is found with scipy's ``linear_sum_assignment``
after giving forbidden pairs a cost larger than any sum of allowed costs, then dropping them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["gated_linear_assignment"]


def gated_linear_assignment(cost, forbidden=None) -> tuple[np.ndarray, np.ndarray]:
    """Min-cost, max-cardinality matching of an ``(N, M)`` cost matrix over allowed pairs.

    ``cost``: array-like ``(N, M)``; NaN or +inf entries are forbidden as well.
    ``forbidden``: optional boolean ``(N, M)``, True where a pair may not match.
    Returns ``(rows, cols)``, int64 arrays of equal length sorted by row, every pair allowed.
    Ties are broken deterministically (scipy's order). Raises ``ValueError`` on ``-inf``.
    """
    c = np.array(cost, dtype=np.float64, copy=True)
    if c.ndim != 2:
        raise ValueError(f"cost must be 2-D (N, M), got shape {c.shape}")
    bad = ~np.isfinite(c)
    if np.any(np.isneginf(c)):
        raise ValueError("cost contains -inf")
    if forbidden is not None:
        forb = np.asarray(forbidden, dtype=bool)
        if forb.shape != c.shape:
            raise ValueError(f"forbidden has shape {forb.shape}, cost has {c.shape}")
        bad = bad | forb
    if c.size == 0 or bad.all():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if not bad.any():
        # Nothing forbidden: solve the costs as given, so that ties break exactly as scipy's.
        rows, cols = linear_sum_assignment(c)
        return rows.astype(np.int64), cols.astype(np.int64)
    allowed = c[~bad]
    # Shift allowed costs to be >= 0, then make one forbidden edge cost more than any full
    # matching of allowed edges: maximal cardinality wins first, minimal cost second.
    shift = allowed.min()
    c = c - shift
    big = (c[~bad].max() + 1.0) * (min(c.shape) + 1) * 2.0
    c[bad] = big
    rows, cols = linear_sum_assignment(c)
    keep = ~bad[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
