"""HOTA (Luiten et al. 2021) through the installed ``trackeval`` package, when it is available.

HOTA does not depend on a per-frame matching convention; it is computed by TrackEval's own
``HOTA`` metric class on our preprocessed data (:meth:`SequenceData.trackeval_dict`), so the
numbers are TrackEval's by construction. Summary values are means over the 19 alpha thresholds
0.05..0.95, as in TrackEval's tables.
"""

from __future__ import annotations

import numpy as np

from deepmot.evaluation.protocol import SequenceData

__all__ = ["hota_available", "hota_sequence", "hota_combine", "hota_summary", "HOTA_FIELDS"]

HOTA_FIELDS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "HOTA(0)", "LocA(0)")


def _metric():
    try:
        from trackeval.metrics import HOTA
    except ImportError:
        return None
    return HOTA()


def hota_available() -> bool:
    """True when the ``trackeval`` package can be imported."""
    return _metric() is not None


def hota_sequence(seq: SequenceData) -> dict | None:
    """TrackEval's per-alpha HOTA result dict of one sequence, or None without ``trackeval``."""
    metric = _metric()
    return None if metric is None else metric.eval_sequence(seq.trackeval_dict())


def hota_combine(results: list[dict]) -> dict | None:
    """Combine per-sequence HOTA results (counts summed, then recomputed, as TrackEval's COMBINED)."""
    metric = _metric()
    if metric is None or not results or any(r is None for r in results):
        return None
    return metric.combine_sequences({str(i): r for i, r in enumerate(results)})


def hota_summary(res: dict | None) -> dict:
    """``{HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA}`` as means over alphas, plus
    ``HOTA(0)``, ``LocA(0)``; empty when ``res`` is None."""
    if res is None:
        return {}
    return {k: float(np.mean(res[k])) for k in HOTA_FIELDS}
