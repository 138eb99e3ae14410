"""Identity metrics (IDF1, IDP, IDR) of one sequence: the global one-to-one GT-id/tracker-id assignment.

A GT id and a tracker id "co-occur" in a frame when their boxes overlap with IoU >= threshold.
The assignment maximising the total co-occurrence count (IDTP) is what TrackEval's ``Identity`` and
motmetrics' ``id_global_assignment`` find with Hungarian on the ``(G + K) x (G + K)`` cost of
IDFN + IDFP (Ristani et al. 2016). That cost of an assignment is ``sum(GT boxes) + sum(tracker
boxes) - 2 * (co-occurrences of its pairs)``, so the same optimum (IDTP is unique) is a maximum-
weight matching on the ``G x K'`` co-occurrence counts alone, ``K'`` the tracker ids that co-occur
with some GT id: scipy's Hungarian solver on that far smaller matrix (integer counts, exact sums).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from deepmot.evaluation.protocol import SequenceData

__all__ = ["identity_counts", "identity_final"]

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
    pair_g, pair_k = np.concatenate(pair_g), np.concatenate(pair_k)
    used, pair_k = np.unique(pair_k, return_inverse=True)
    co = np.bincount(pair_g * len(used) + pair_k, minlength=G * len(used)).reshape(G, len(used))
    rows, cols = linear_sum_assignment(co, maximize=True)
    idtp = int(co[rows, cols].sum())
    return {"IDTP": idtp, "IDFN": n_gt_dets - idtp, "IDFP": n_trk_dets - idtp}


def identity_final(c: dict) -> dict:
    """IDF1, IDR, IDP (fractions) from (summed) counts, TrackEval's formulas."""
    tp, fn, fp = c["IDTP"], c["IDFN"], c["IDFP"]
    return {
        "IDF1": tp / max(1.0, tp + 0.5 * fp + 0.5 * fn),
        "IDR": tp / max(1.0, tp + fn),
        "IDP": tp / max(1.0, tp + fp),
    }
