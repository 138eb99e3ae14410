"""Per-frame GT-to-tracker matching and accumulation into py-motmetrics' ``MOTAccumulator``.

Two matching rules (IoU >= 0.5 required for a match in both):

* ``"trackeval"`` (official): each GT object prefers the tracker id it was matched to in the
  *previous timestep* (score ``1000 * same_id + IoU``), the rest is Hungarian maximising IoU.
  The matches are computed here and the accumulator's event table is written directly
  (:func:`events_from_matches`): the table ``MOTAccumulator.update`` would record, frame by
  frame, for a distance matrix whose only finite entries are the chosen pairs (its switch rule,
  "hypothesis differs from the last matched one, any gap", is TrackEval's), built with array
  operations instead of a Python loop over every event.
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

__all__ = ["Matches", "MATCHING_RULES", "match_trackeval", "accumulate", "events_from_matches"]

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


_EVENT_TYPES = ["RAW", "FP", "MISS", "SWITCH", "MATCH", "TRANSFER", "ASCEND", "MIGRATE"]


def _previous_in_group(key: np.ndarray, t: np.ndarray, value: np.ndarray, missing: int = -1) -> np.ndarray:
    """For each entry, ``value`` of the latest earlier entry (smaller ``t``) with the same ``key``,
    or ``missing``. ``t`` is unique within a key."""
    order = np.lexsort((t, key))
    prev = np.full(len(key), missing, np.int64)
    same = key[order][1:] == key[order][:-1]
    prev[order[1:][same]] = value[order][:-1][same]
    return prev


def events_from_matches(seq: SequenceData, m: Matches,
                        per_frame: list[tuple[np.ndarray, np.ndarray]]) -> mm.MOTAccumulator:
    """A ``MOTAccumulator`` holding the events ``update`` records, frame ``t + 1`` by frame, for
    the distance matrix ``1 - IoU`` at the pairs of ``per_frame`` and NaN elsewhere.

    Per frame, in update's order: one RAW (NaN), a RAW per pair (row order), per unmatched GT
    and per unmatched tracker box; MATCH for pairs continuing the object's last match; for the
    other pairs (row order) ASCEND (switch to a never-matched hypothesis), MIGRATE (transfer of
    a never-matched object), TRANSFER (hypothesis last taken over by another object), then SWITCH
    or MATCH; MISS per unmatched GT; FP per unmatched tracker box.
    """
    T = seq.num_frames
    hit = m.trk >= 0
    row = np.concatenate([np.arange(len(g)) for g in seq.gt_ids]) if len(m.t) else np.zeros(0, np.int64)
    # Tracker boxes: frame, contiguous id, column, matched?
    k_t = np.repeat(np.arange(T), m.tracker_dets)
    k_id = np.concatenate(seq.tracker_ids) if T else np.zeros(0, np.int64)
    k_col = np.concatenate([np.arange(len(k)) for k in seq.tracker_ids]) if T else np.zeros(0, np.int64)
    k_hit = np.zeros(len(k_t), bool)
    offsets = np.concatenate([[0], np.cumsum(m.tracker_dets)[:-1]]) if T else np.zeros(0, np.int64)
    for t, (_, cols) in enumerate(per_frame):
        k_hit[offsets[t] + cols] = True
    # Matched pairs and the accumulator's state before their frame.
    t, o, h, r = m.t[hit], m.gt[hit], m.trk[hit], row[hit]
    d = 1.0 - m.iou[hit]
    prev_h = _previous_in_group(o, t, h)                     # o's last hypothesis (self.m)
    cont = prev_h == h                                       # step 1: re-established
    switch = ~cont & (prev_h >= 0)
    ascend = switch & (_previous_in_group(h, t, np.zeros_like(h)) < 0)  # h never matched before
    s2 = ~cont
    prev_o = np.full(len(t), -1, np.int64)
    prev_o[s2] = _previous_in_group(h[s2], t[s2], o[s2])     # self.res_m: step-2 matches only
    transfer = s2 & (prev_o >= 0) & (prev_o != o)
    migrate = transfer & (prev_h < 0)
    miss = ~hit
    nan = np.full(1, np.nan)

    def part(sel_t, section, pos, sub, etype, oid, hid, dist):
        n = len(sel_t)
        return (sel_t, np.full(n, section), pos, np.full(n, sub), np.full(n, _EVENT_TYPES.index(etype)),
                np.broadcast_to(np.asarray(oid, float), (n,)), np.broadcast_to(np.asarray(hid, float), (n,)),
                np.broadcast_to(np.asarray(dist, float), (n,)))

    parts = [
        part(np.arange(T), 0, np.zeros(T, np.int64), 0, "RAW", nan, nan, nan),
        part(t, 1, r, 0, "RAW", o, h, d),
        part(m.t[miss], 2, row[miss], 0, "RAW", m.gt[miss], nan, nan),
        part(k_t[~k_hit], 3, k_col[~k_hit], 0, "RAW", nan, k_id[~k_hit], nan),
        part(t[cont], 4, r[cont], 0, "MATCH", o[cont], h[cont], d[cont]),
        part(t[ascend], 5, r[ascend], 0, "ASCEND", o[ascend], h[ascend], d[ascend]),
        part(t[migrate], 5, r[migrate], 1, "MIGRATE", o[migrate], h[migrate], d[migrate]),
        part(t[transfer], 5, r[transfer], 2, "TRANSFER", o[transfer], h[transfer], d[transfer]),
        part(t[switch], 5, r[switch], 3, "SWITCH", o[switch], h[switch], d[switch]),
        part(t[s2 & ~switch], 5, r[s2 & ~switch], 3, "MATCH", o[s2 & ~switch], h[s2 & ~switch], d[s2 & ~switch]),
        part(m.t[miss], 6, row[miss], 0, "MISS", m.gt[miss], nan, nan),
        part(k_t[~k_hit], 7, k_col[~k_hit], 0, "FP", nan, k_id[~k_hit], nan),
    ]
    ev_t, section, pos, sub, etype, oid, hid, dist = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((sub, pos, section, ev_t))
    ev_t = ev_t[order]
    first = np.searchsorted(ev_t, ev_t, side="left")
    indices = {"FrameId": (ev_t + 1).tolist(), "Event": (np.arange(len(ev_t)) - first).tolist()}
    events = {"Type": np.asarray(_EVENT_TYPES, dtype=object)[etype[order]], "OId": oid[order],
              "HId": hid[order], "D": dist[order]}
    acc = mm.MOTAccumulator(auto_id=False)
    acc.cached_events_df = mm.MOTAccumulator.new_event_dataframe_with_data(indices, events)
    acc.dirty_events = False
    return acc


def accumulate(seq: SequenceData, matching: str = "trackeval",
               threshold: float = 0.5) -> tuple[mm.MOTAccumulator, Matches]:
    """Match every frame of ``seq`` with ``matching`` and record the events in a ``MOTAccumulator``.

    Frame ids in the accumulator are the 1-based frame numbers; object/hypothesis ids are the
    contiguous ids of ``seq``; distances are ``1 - IoU``. Returns ``(accumulator, matches)``.
    """
    if matching not in MATCHING_RULES:
        raise ValueError(f"unknown matching rule {matching!r}; choose from {MATCHING_RULES}")
    if matching == "trackeval":
        per_frame = match_trackeval(seq, threshold)
        matches = _record(seq, per_frame)
        return events_from_matches(seq, matches, per_frame), matches
    acc = mm.MOTAccumulator(auto_id=False)
    for t, (g, k, sim) in enumerate(zip(seq.gt_ids, seq.tracker_ids, seq.similarity)):
        dist = 1.0 - sim
        dist[dist > 1.0 - threshold] = np.nan
        acc.update(g, k, dist, frameid=t + 1)
    return acc, _record(seq, _matches_from_events(seq, acc))
