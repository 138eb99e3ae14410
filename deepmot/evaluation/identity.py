"""Identity metrics (IDF1, IDP, IDR) of one sequence: the global one-to-one GT-id/tracker-id assignment.

A GT id and a tracker id "co-occur" in a frame when their boxes overlap with IoU >= threshold.
The assignment maximising the total co-occurrence count (IDTP) is found with scipy's Hungarian
solver on the usual ``(G + K) x (G + K)`` cost of IDFN + IDFP (Ristani et al. 2016; TrackEval's
``Identity`` and motmetrics' ``id_global_assignment`` solve the same problem, so IDTP is unique).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from deepmot.evaluation.protocol import SequenceData

__all__ = ["identity_counts", "identity_final"]

_BIG = 1e10  # cost of impossible cells (a GT id paired with another GT id's dummy, ...)


def identity_counts(seq: SequenceData, threshold: float = 0.5) -> dict:
    """``{"IDTP", "IDFN", "IDFP"}`` (ints) of one sequence."""
    n_gt_dets, n_trk_dets = seq.num_gt_dets, seq.num_tracker_dets
    if n_trk_dets == 0 or n_gt_dets == 0:
        return {"IDTP": 0, "IDFN": n_gt_dets, "IDFP": n_trk_dets}
    G, K = seq.num_gt_ids, seq.num_tracker_ids
    pair_g, pair_k = [], []
    for g, k, sim in zip(seq.gt_ids, seq.tracker_ids, seq.similarity):
        r, c = np.nonzero(sim >= threshold)
        pair_g.append(g[r])
        pair_k.append(k[c])
    co = np.zeros((G, K))
    np.add.at(co, (np.concatenate(pair_g), np.concatenate(pair_k)), 1)
    gt_count = np.bincount(np.concatenate(seq.gt_ids), minlength=G).astype(float)
    trk_count = np.bincount(np.concatenate(seq.tracker_ids), minlength=K).astype(float)
    fn = np.zeros((G + K, G + K))
    fp = np.zeros((G + K, G + K))
    fn[:G, K:] = _BIG
    fp[G:, :K] = _BIG
    fn[:G, :K] = gt_count[:, None] - co
    fn[np.arange(G), K + np.arange(G)] = gt_count
    fp[:G, :K] = trk_count[None, :] - co
    fp[G + np.arange(K), np.arange(K)] = trk_count
    rows, cols = linear_sum_assignment(fn + fp)
    idfn = int(fn[rows, cols].sum())
    idfp = int(fp[rows, cols].sum())
    return {"IDTP": int(gt_count.sum()) - idfn, "IDFN": idfn, "IDFP": idfp}


def identity_final(c: dict) -> dict:
    """IDF1, IDR, IDP (fractions) from (summed) counts, TrackEval's formulas."""
    tp, fn, fp = c["IDTP"], c["IDFN"], c["IDFP"]
    return {
        "IDF1": tp / max(1.0, tp + 0.5 * fp + 0.5 * fn),
        "IDR": tp / max(1.0, tp + fn),
        "IDP": tp / max(1.0, tp + fp),
    }
