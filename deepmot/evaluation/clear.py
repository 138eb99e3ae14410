"""CLEAR-MOT counts from a :class:`~deepmot.evaluation.accumulate.Matches` record, per convention.

Where TrackEval (official) and py-motmetrics differ, both definitions are here:

* mostly tracked: tracked ratio ``> 0.8`` (``mt="gt"``, TrackEval) or ``>= 0.8`` (``mt="ge"``,
  motmetrics); partially tracked ``>= 0.2``; the rest mostly lost.
* fragmentation: ``frag="trackeval"`` counts, per GT object, the (re)starts of being tracked minus
  one, where "previous" is the previous frame holding both GT and tracker boxes (frames without
  either do not interrupt a track); ``frag="motmetrics"`` counts tracked -> missed transitions
  between the first and the last tracked frame, over the frames where the object is present.

ID switches agree in both tools (a match to a different tracker id than the last match of that
GT object, any gap). Final ratios use TrackEval's formulas (:func:`clear_final`).
"""

from __future__ import annotations

import numpy as np

from deepmot.evaluation.accumulate import Matches

__all__ = ["MT_RULES", "FRAG_RULES", "clear_counts", "clear_final", "CLEAR_COUNT_FIELDS"]

MT_RULES = ("gt", "ge")
FRAG_RULES = ("trackeval", "motmetrics")
CLEAR_COUNT_FIELDS = ("TP", "FN", "FP", "IDSW", "MT", "PT", "ML", "Frag", "MOTP_sum", "Frames")


def _by_object(m: Matches) -> np.ndarray:
    """Entry order sorted by GT id, then frame."""
    return np.lexsort((m.t, m.gt))


def _frag_trackeval(m: Matches) -> int:
    both = (m.tracker_dets > 0) & (np.bincount(m.t, minlength=m.num_frames) > 0)
    rank = np.cumsum(both) - 1  # index of each frame among frames with GT and tracker boxes
    hit = m.trk >= 0
    order = _by_object(m)
    order = order[hit[order]]
    gt, r = m.gt[order], rank[m.t[order]]
    start = np.ones(len(order), bool)
    start[1:] = (gt[1:] != gt[:-1]) | (r[1:] != r[:-1] + 1)
    starts = np.bincount(gt[start], minlength=m.num_gt_ids)
    return int(np.sum(starts[starts > 0] - 1))


def _frag_motmetrics(m: Matches) -> int:
    order = _by_object(m)
    gt, hit = m.gt[order], m.trk[order] >= 0
    pos = np.arange(len(order))
    last_hit = np.full(m.num_gt_ids, -1, np.int64)
    np.maximum.at(last_hit, gt[hit], pos[hit])
    drop = np.zeros(len(order), bool)
    drop[1:] = (gt[1:] == gt[:-1]) & hit[:-1] & ~hit[1:]
    return int(np.sum(drop & (pos < last_hit[gt])))


def _motp_sum(m: Matches) -> float:
    """Sum of matched IoUs, added frame by frame in GT-row order (TrackEval's float order)."""
    hit = m.trk >= 0
    total = 0.0
    t, iou = m.t[hit], m.iou[hit]
    bounds = np.flatnonzero(np.diff(t)) + 1
    for chunk in np.split(iou, bounds):
        total += sum(chunk.tolist())
    return total


def clear_counts(m: Matches, mt: str = "gt", frag: str = "trackeval") -> dict:
    """Integer CLEAR counts (and the IoU sum of matches) of one sequence under the given conventions.

    Returns ``TP, FN, FP, IDSW, MT, PT, ML, Frag`` (ints), ``MOTP_sum`` (float, sum of IoU over
    matches) and ``Frames``.
    """
    if mt not in MT_RULES:
        raise ValueError(f"unknown mostly-tracked rule {mt!r}; choose from {MT_RULES}")
    if frag not in FRAG_RULES:
        raise ValueError(f"unknown fragmentation rule {frag!r}; choose from {FRAG_RULES}")
    hit = m.trk >= 0
    tp = int(hit.sum())
    order = _by_object(m)
    order = order[hit[order]]
    gt, trk = m.gt[order], m.trk[order]
    idsw = int(np.sum((gt[1:] == gt[:-1]) & (trk[1:] != trk[:-1])))
    present = np.bincount(m.gt, minlength=m.num_gt_ids)
    tracked = np.bincount(m.gt[hit], minlength=m.num_gt_ids)
    ratio = tracked[present > 0] / present[present > 0]
    n_mt = int(np.sum(ratio > 0.8) if mt == "gt" else np.sum(ratio >= 0.8))
    n_pt = int(np.sum(ratio >= 0.2)) - n_mt
    return {
        "TP": tp,
        "FN": int(len(m.gt) - tp),
        "FP": int(m.tracker_dets.sum() - tp),
        "IDSW": idsw,
        "MT": n_mt,
        "PT": n_pt,
        "ML": int(m.num_gt_ids - n_mt - n_pt),
        "Frag": _frag_trackeval(m) if frag == "trackeval" else _frag_motmetrics(m),
        "MOTP_sum": _motp_sum(m),
        "Frames": m.num_frames,
    }


def clear_final(c: dict) -> dict:
    """Ratios from (summed) counts with TrackEval's formulas: MOTA, MODA, MOTP (mean IoU), Rcll,
    Prcn, MTR/PTR/MLR, CLR_F1, FP_per_frame, sMOTA, MOTAL. Fractions, not percent."""
    tp, fn, fp, idsw = c["TP"], c["FN"], c["FP"], c["IDSW"]
    n_gt = max(1.0, tp + fn)
    n_ids = max(1.0, c["MT"] + c["PT"] + c["ML"])
    log_idsw = np.log10(idsw) if idsw > 0 else idsw
    return {
        "MOTA": (tp - fp - idsw) / n_gt,
        "MOTP": c["MOTP_sum"] / max(1.0, tp),
        "MODA": (tp - fp) / n_gt,
        "Rcll": tp / n_gt,
        "Prcn": tp / max(1.0, tp + fp),
        "MTR": c["MT"] / n_ids,
        "PTR": c["PT"] / n_ids,
        "MLR": c["ML"] / n_ids,
        "CLR_F1": tp / max(1.0, tp + 0.5 * fn + 0.5 * fp),
        "FP_per_frame": fp / max(1.0, c["Frames"]),
        "sMOTA": (c["MOTP_sum"] - fp - idsw) / n_gt,
        "MOTAL": float((tp - fp - log_idsw) / n_gt),
    }
