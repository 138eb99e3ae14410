"""The fast paths of the evaluation equal the straightforward code they replace: the event table
written by ``events_from_matches`` equals motmetrics' own ``MOTAccumulator.update`` loop, and the
identity counts equal TrackEval's full ``(G + K)`` assignment."""

from __future__ import annotations

import motmetrics as mm
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from deepmot.datasets.mot import MOTRows
from deepmot.evaluation import preprocess
from deepmot.evaluation.accumulate import _record, events_from_matches, match_trackeval
from deepmot.evaluation.identity import identity_counts

from test_evaluation_random import make_sequence  # tests/ is on sys.path under pytest


def _rows(a: np.ndarray, gt: bool) -> MOTRows:
    k = len(a)
    return MOTRows("x.txt", a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6].copy(),
                   a[:, 6].copy() if gt else np.ones(k), a[:, 7].astype(np.int64) if gt else -np.ones(k, np.int64),
                   a[:, 8].copy() if gt else -np.ones(k), np.arange(1, k + 1))


def _sequence(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 40))
    gt, res = make_sequence(rng, n)
    # a few more id swaps and re-used ids so that TRANSFER / MIGRATE / ASCEND all occur
    swap = rng.random(len(res)) < 0.05
    res[swap, 1] = rng.choice(res[:, 1], int(swap.sum()))
    res = res[np.unique(res[:, :2], axis=0, return_index=True)[1]]
    return preprocess("RND", _rows(gt, True), _rows(res, False), n + 3, "mot17")  # 3 empty frames at the end


def _update_loop(seq, per_frame) -> mm.MOTAccumulator:
    acc = mm.MOTAccumulator(auto_id=False)
    for t, (g, k, sim, (rows, cols)) in enumerate(zip(seq.gt_ids, seq.tracker_ids, seq.similarity, per_frame)):
        forced = np.full((len(g), len(k)), np.nan)
        forced[rows, cols] = 1.0 - sim[rows, cols]
        acc.update(g, k, forced, frameid=t + 1)
    return acc


@pytest.mark.parametrize("seed", range(6))
def test_event_table_equals_motmetrics_update(seed: int) -> None:
    seq = _sequence(seed)
    per_frame = match_trackeval(seq)
    ours = events_from_matches(seq, _record(seq, per_frame), per_frame).events
    ref = _update_loop(seq, per_frame).events
    pd.testing.assert_frame_equal(ours, ref)
    if seed == 0:  # the random data reaches every event type
        assert set(ref.Type.astype(str)) == {"RAW", "FP", "MISS", "SWITCH", "MATCH", "TRANSFER", "ASCEND",
                                             "MIGRATE"}


def _identity_full(seq, threshold: float = 0.5) -> dict:
    """TrackEval's formulation: Hungarian on the (G + K) x (G + K) cost of IDFN + IDFP."""
    G, K = seq.num_gt_ids, seq.num_tracker_ids
    co = np.zeros((G, K))
    for g, k, sim in zip(seq.gt_ids, seq.tracker_ids, seq.similarity):
        r, c = np.nonzero(sim >= threshold)
        np.add.at(co, (g[r], k[c]), 1)
    gt_count = np.bincount(np.concatenate(seq.gt_ids), minlength=G).astype(float)
    trk_count = np.bincount(np.concatenate(seq.tracker_ids), minlength=K).astype(float)
    fn, fp = np.zeros((G + K, G + K)), np.zeros((G + K, G + K))
    fn[:G, K:], fp[G:, :K] = 1e10, 1e10
    fn[:G, :K] = gt_count[:, None] - co
    fn[np.arange(G), K + np.arange(G)] = gt_count
    fp[:G, :K] = trk_count[None, :] - co
    fp[G + np.arange(K), np.arange(K)] = trk_count
    rows, cols = linear_sum_assignment(fn + fp)
    idfn, idfp = int(fn[rows, cols].sum()), int(fp[rows, cols].sum())
    return {"IDTP": int(gt_count.sum()) - idfn, "IDFN": idfn, "IDFP": idfp}


@pytest.mark.parametrize("seed", range(6))
def test_identity_counts_equal_full_assignment(seed: int) -> None:
    seq = _sequence(seed)
    assert identity_counts(seq) == _identity_full(seq)
