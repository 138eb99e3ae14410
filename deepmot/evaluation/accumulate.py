"""Per-frame GT-to-tracker matching and accumulation into py-motmetrics' ``MOTAccumulator``.

Two matching rules (IoU >= 0.5 required for a match in both):

* ``"trackeval"`` (official): each GT object prefers the tracker id it was matched to in the
  *previous timestep* (score ``1000 * same_id + IoU``), the rest is Hungarian maximising IoU.
  The matches are computed here and handed to the accumulator as a distance matrix whose only
  finite entries are the chosen pairs, so motmetrics records exactly these MATCH/SWITCH/MISS/FP
  events (its switch rule, "hypothesis differs from the last matched one, any gap", is TrackEval's).
* ``"motmetrics"``: the accumulator matches by itself (it re-establishes the last match from any
  earlier frame, then solves the rest by min-cost LAP on ``1 - IoU``).

Either way the result is a :class:`Matches` record (one entry per GT box present) from which
:mod:`deepmot.evaluation.clear` counts everything under either convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import motmetrics as mm
import numpy as np
from scipy.optimize import linear_sum_assignment

from deepmot.evaluation.iou import EPS
from deepmot.evaluation.protocol import SequenceData

__all__ = ["Matches", "MATCHING_RULES", "match_trackeval", "accumulate"]

MATCHING_RULES = ("trackeval", "motmetrics")


@dataclass
class Matches:
    """The matching of one sequence: one entry per GT box present (frame order, file order inside).

    ``t`` (E,) 0-based frame index, ``gt`` (E,) contiguous GT id, ``trk`` (E,) matched contiguous
    tracker id or -1 (miss), ``iou`` (E,) IoU of the match (nan for a miss).
    ``tracker_dets`` (T,) tracker boxes per frame; ``num_gt_ids`` as in the sequence.
    """

    t: np.ndarray
    gt: np.ndarray
    trk: np.ndarray
    iou: np.ndarray
    tracker_dets: np.ndarray
    num_gt_ids: int

    @property
    def num_frames(self) -> int:
        return int(self.tracker_dets.shape[0])


def match_trackeval(seq: SequenceData, threshold: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """TrackEval's CLEAR matching -> per frame ``(gt rows, tracker cols)`` index arrays.

    Score ``1000 * [tracker id == id matched to this GT in the previous timestep with both GT and
    tracker boxes] + IoU``, pairs with IoU < threshold zeroed, Hungarian maximising the score.
    """
    prev = np.full(seq.num_gt_ids, -1, np.int64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    out = []
    for g, k, sim in zip(seq.gt_ids, seq.tracker_ids, seq.similarity):
        if len(g) == 0 or len(k) == 0:
            out.append(empty)
            continue
        score = 1000 * (k[None, :] == prev[g][:, None]) + sim
        score[sim < threshold - EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > 0 + EPS
        rows, cols = rows[ok], cols[ok]
        prev[:] = -1
        prev[g[rows]] = k[cols]
        out.append((rows, cols))
    return out


def _record(seq: SequenceData, per_frame: list[tuple[np.ndarray, np.ndarray]]) -> Matches:
    ts, gts, trks, ious = [], [], [], []
    for t, (g, k, sim, (rows, cols)) in enumerate(zip(seq.gt_ids, seq.tracker_ids, seq.similarity, per_frame)):
        if len(g) == 0:
            continue
        trk = np.full(len(g), -1, np.int64)
        iou = np.full(len(g), np.nan)
        trk[rows] = k[cols]
        iou[rows] = sim[rows, cols]
        ts.append(np.full(len(g), t, np.int64))
        gts.append(g)
        trks.append(trk)
        ious.append(iou)
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return Matches(cat(ts, np.int64), cat(gts, np.int64), cat(trks, np.int64), cat(ious, np.float64),
                   np.array([len(k) for k in seq.tracker_ids], np.int64), seq.num_gt_ids)


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index in ``ids`` (unique values) of each value of ``wanted``."""
    sorter = np.argsort(ids)
    return sorter[np.searchsorted(ids, wanted, sorter=sorter)]


def _matches_from_events(seq: SequenceData, acc: mm.MOTAccumulator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-frame (rows, cols) of the accumulator's MATCH/SWITCH events (frame ids are ``t + 1``)."""
    ev = acc.mot_events
    ev = ev[ev.Type.isin(["MATCH", "SWITCH"])]
    frames = ev.index.get_level_values("FrameId").to_numpy(np.int64) - 1
    oids = ev.OId.to_numpy().astype(np.int64)
    hids = ev.HId.to_numpy().astype(np.int64)
    out = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in range(seq.num_frames)]
    if len(frames) == 0:
        return out
    bounds = np.flatnonzero(np.diff(frames)) + 1
    for sl_o, sl_h, sl_t in zip(np.split(oids, bounds), np.split(hids, bounds), np.split(frames, bounds)):
        t = int(sl_t[0])
        rows = _positions(seq.gt_ids[t], sl_o)
        cols = _positions(seq.tracker_ids[t], sl_h)
        order = np.argsort(rows)
        out[t] = (rows[order], cols[order])
    return out


def accumulate(seq: SequenceData, matching: str = "trackeval",
               threshold: float = 0.5) -> tuple[mm.MOTAccumulator, Matches]:
    """Match every frame of ``seq`` with ``matching`` and record the events in a ``MOTAccumulator``.

    Frame ids in the accumulator are the 1-based frame numbers; object/hypothesis ids are the
    contiguous ids of ``seq``; distances are ``1 - IoU``. Returns ``(accumulator, matches)``.
    """
    if matching not in MATCHING_RULES:
        raise ValueError(f"unknown matching rule {matching!r}; choose from {MATCHING_RULES}")
    acc = mm.MOTAccumulator(auto_id=False)
    if matching == "trackeval":
        per_frame = match_trackeval(seq, threshold)
        for t, (g, k, sim, (rows, cols)) in enumerate(zip(seq.gt_ids, seq.tracker_ids, seq.similarity, per_frame)):
            forced = np.full((len(g), len(k)), np.nan)
            forced[rows, cols] = 1.0 - sim[rows, cols]
            acc.update(g, k, forced, frameid=t + 1)
    else:
        for t, (g, k, sim) in enumerate(zip(seq.gt_ids, seq.tracker_ids, seq.similarity)):
            dist = 1.0 - sim
            dist[dist > 1.0 - threshold] = np.nan
            acc.update(g, k, dist, frameid=t + 1)
        per_frame = _matches_from_events(seq, acc)
    return acc, _record(seq, per_frame)
