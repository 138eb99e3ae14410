"""A multi-object tracker over any batched single-object tracker (SOT), driven by public detections.

Per frame (:meth:`MultiTracker.step`): detections filtered by score; **one** batched SOT step for
every live track; SOT boxes associated to detections on IoU with
:func:`deepmot.matching.associate` (active tracks first, then inactive ones); matched tracks
refined by their detection; unmatched tracks go inactive and die after a patience; duplicate
active tracks suppressed (older id wins); births from unmatched confident detections confirmed
over ``birth_wait`` frames. All thresholds are in :class:`~trackers.multi_config.MOTConfig`.

The SOT is anything following :class:`BatchedSOT` (``add``/``remove``/``reinit``/``track``,
optionally ``move``); ``trackers.siamrpn.mot.SiamRPNSOT`` adapts the batched SiamRPN.
Boxes handed to and returned by the SOT are ``x, y, w, h`` in the detections' coordinates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from deepmot.boxes import box_iou
from deepmot.datasets.mot import split_variant
from deepmot.engine.protocol import SequenceFactory
from deepmot.matching import associate
from trackers.multi_config import InferenceFileConfig, MOTConfig

__all__ = ["SOTOutput", "BatchedSOT", "Track", "FrameOutput", "MultiTracker", "mot_factory",
           "build_mot_factory"]


# --------------------------------------------------------------------------- protocol
class SOTOutput(Protocol):
    """Result of one batched SOT step: ``ids`` (N), ``bbox`` ``(N, 4)`` x, y, w, h, ``best_score`` ``(N,)``."""

    ids: list[int]
    bbox: Tensor
    best_score: Tensor


class BatchedSOT(Protocol):
    """What :class:`MultiTracker` needs from a single-object tracker running N targets at once.

    Images are BGR uint8 ``(H, W, 3)``; boxes ``(K, 4)`` ``x, y, w, h`` pixels; ids ints chosen by
    the caller. An SOT may also offer ``move(ids, boxes_xywh)`` (set position and size without a
    new template); without it, refinement changes the written boxes only.
    """

    def add(self, img: np.ndarray, boxes_xywh: Tensor, ids: Sequence[int]) -> list[int]: ...

    def remove(self, ids: Sequence[int]) -> None: ...

    def reinit(self, img: np.ndarray, ids: Sequence[int], boxes_xywh: Tensor) -> None: ...

    def track(self, img: np.ndarray) -> SOTOutput: ...


def _xywh(xyxy: Tensor) -> Tensor:
    return torch.cat([xyxy[..., :2], xyxy[..., 2:] - xyxy[..., :2]], dim=-1)


def _xyxy(xywh: Tensor) -> Tensor:
    return torch.cat([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], dim=-1)


# --------------------------------------------------------------------------- state
@dataclass
class Track:
    """One track: ``box`` ``(4,)`` float64 x1, y1, x2, y2 (latest), ``score`` of its last detection,
    ``active`` (matched this frame, written), ``misses`` consecutive unmatched frames, ``hits``,
    ``sot_score`` the SOT's confidence at its last step."""

    id: int
    box: Tensor
    score: float
    active: bool = True
    misses: int = 0
    hits: int = 1
    sot_score: float = 1.0


@dataclass
class _Candidate:
    """A chain of unmatched detections in consecutive frames (a track waiting to be born)."""

    frames: list[int]
    boxes: list[Tensor]
    scores: list[float]


@dataclass
class FrameOutput:
    """Tracks written for one frame: ``ids`` ``(K,)`` int64, ``boxes`` ``(K, 4)`` float64 xyxy,
    ``scores`` ``(K,)`` float64 (the matched detection's score)."""

    ids: Tensor
    boxes: Tensor
    scores: Tensor


@dataclass
class _Rows:
    frame: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    boxes: list[Tensor] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, frame: int, tid: int, box: Tensor, score: float) -> None:
        self.frame.append(int(frame))
        self.ids.append(int(tid))
        self.boxes.append(box)
        self.scores.append(float(score))


# --------------------------------------------------------------------------- tracker
class MultiTracker:
    """MOT over a :class:`BatchedSOT` for one sequence (create one per sequence).

    ``detector``: public-detector name of the sequence (``"DPM"``...), selecting the score
    thresholds of ``cfg.detector_scores``. Track ids start at 1. ``timing`` accumulates seconds
    spent in the SOT (``"sot"``: track/add/remove/reinit/move) and in the MOT logic (``"assoc"``).
    """

    def __init__(self, sot: BatchedSOT, cfg: MOTConfig | dict | None = None, detector: str | None = None):
        self.sot = sot
        self.cfg = cfg if isinstance(cfg, MOTConfig) else MOTConfig(**(cfg or {}))
        self.min_score, self.birth_score = self.cfg.scores_for(detector)
        self.tracks: dict[int, Track] = {}
        self.candidates: list[_Candidate] = []
        self.timing = {"sot": 0.0, "assoc": 0.0}
        self.frames = 0
        self._next_id = 1
        self._rows = _Rows()

    # ----------------------------------------------------------------- public
    def step(self, image: np.ndarray, det_boxes: Tensor, det_scores: Tensor, frame: int) -> FrameOutput:
        """Process frame number ``frame`` (BGR uint8 ``image``, detections ``(D, 4)`` xyxy pixels
        with scores ``(D,)``); returns the tracks written for it (active and coasting tracks)."""
        dets, scores = self._filter(det_boxes, det_scores)
        t0 = time.perf_counter()
        if self.tracks:
            self._sot_track(image)
        t1 = time.perf_counter()
        matched, used, iou = self._associate(dets)
        moves, reinits = self._update(matched, dets, scores, iou)
        self._suppress_duplicates(moves, reinits)
        deaths = self._deaths(image.shape[:2])
        births = self._births(dets, scores, used, frame)
        t2 = time.perf_counter()
        self._apply(image, deaths, moves, reinits, births)
        t3 = time.perf_counter()
        self.timing["sot"] += (t1 - t0) + (t3 - t2)
        self.timing["assoc"] += t2 - t1
        self.frames += 1
        return self._write(frame)

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every row written so far: ``frame (K,)``, ``ids (K,)``, ``xywh (K, 4)`` float64, ``conf (K,)``
        (ready for :func:`deepmot.datasets.mot.write_results`)."""
        r = self._rows
        boxes = torch.stack(r.boxes).numpy() if r.boxes else np.zeros((0, 4))
        return (np.asarray(r.frame, np.int64), np.asarray(r.ids, np.int64), _xywh(torch.as_tensor(boxes)).numpy(),
                np.asarray(r.scores, np.float64))

    # ----------------------------------------------------------------- steps
    def _filter(self, det_boxes: Tensor, det_scores: Tensor) -> tuple[Tensor, Tensor]:
        boxes = torch.as_tensor(det_boxes).detach().to("cpu", torch.float64).reshape(-1, 4)
        scores = torch.as_tensor(det_scores).detach().to("cpu", torch.float64).reshape(-1)
        if boxes.shape[0] != scores.shape[0]:
            raise ValueError(f"got {boxes.shape[0]} detection boxes but {scores.shape[0]} scores")
        if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
            raise ValueError("detections contain NaN or inf")
        keep = (scores >= self.min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep], scores[keep]

    def _sot_track(self, image: np.ndarray) -> None:
        out = self.sot.track(image)
        ids = [int(i) for i in out.ids]
        if sorted(ids) != sorted(self.tracks):
            raise RuntimeError(f"SOT tracks ids {sorted(ids)} but the MOT tracker holds {sorted(self.tracks)}")
        boxes = _xyxy(torch.as_tensor(out.bbox).detach().to("cpu", torch.float64).reshape(-1, 4))
        scores = torch.as_tensor(out.best_score).detach().to("cpu", torch.float64).reshape(-1)
        for i, b, sc in zip(ids, boxes, scores.tolist()):
            self.tracks[i].box = b.clone()
            self.tracks[i].sot_score = sc

    def _associate(self, dets: Tensor) -> tuple[dict[int, int], np.ndarray, dict[int, float]]:
        """Active tracks first, then inactive ones on the detections left -> ``{track id: det index}``,
        the used-detection mask and each matched pair's IoU."""
        used = np.zeros(dets.shape[0], bool)
        matched: dict[int, int] = {}
        iou: dict[int, float] = {}
        active = sorted(i for i, t in self.tracks.items() if t.active)
        inactive = sorted(i for i, t in self.tracks.items() if not t.active)
        for group in (active, inactive):
            free = np.flatnonzero(~used)
            if not group or free.size == 0:
                continue
            tb = torch.stack([self.tracks[i].box for i in group])
            rows, cols = associate(tb, dets[free], self.cfg.match_iou, self.cfg.match_method)
            pair_iou = box_iou(tb[rows], dets[free][cols]).diagonal() if len(rows) else torch.zeros(0)
            for r, c, v in zip(rows.tolist(), cols.tolist(), pair_iou.tolist()):
                matched[group[r]] = int(free[c])
                iou[group[r]] = float(v)
                used[free[c]] = True
        return matched, used, iou

    def _update(self, matched: dict[int, int], dets: Tensor, scores: Tensor,
                iou: dict[int, float]) -> tuple[list[int], list[int]]:
        """Refine matched tracks, reactivate matched inactive ones, mark the rest inactive.
        Returns the ids whose SOT state must be moved and those to re-initialise."""
        moves, reinits = [], []
        for tid, tr in self.tracks.items():
            if tid not in matched:
                tr.active = False
                tr.misses += 1
                continue
            d, v = matched[tid], iou[tid]
            if tr.active:
                if v >= self.cfg.refine_iou:
                    tr.box = (1.0 - v) * tr.box + v * dets[d]
                    if self.cfg.refine_state:
                        moves.append(tid)
            else:
                tr.box = dets[d].clone()
                tr.active = True
                (reinits if self.cfg.reinit_on_reactivate else moves).append(tid)
            tr.misses = 0
            tr.hits += 1
            tr.score = float(scores[d])
        return moves, reinits

    def _suppress_duplicates(self, moves: list[int], reinits: list[int]) -> None:
        """Active tracks overlapping an older (smaller id) kept active track at IoU > nms_iou go inactive."""
        kept: list[int] = []
        for tid in sorted(i for i, t in self.tracks.items() if t.active):
            tr = self.tracks[tid]
            if kept:
                ov = box_iou(tr.box[None], torch.stack([self.tracks[k].box for k in kept]))[0]
                if bool((ov > self.cfg.nms_iou).any()):
                    tr.active = False
                    tr.misses = max(tr.misses, 1)
                    for lst in (moves, reinits):
                        if tid in lst:
                            lst.remove(tid)
                    continue
            kept.append(tid)

    def _deaths(self, image_hw: tuple[int, int]) -> list[int]:
        """Tracks unmatched for more than ``patience`` frames, outside the image, or larger than it."""
        h, w = image_hw
        out = []
        for tid, tr in self.tracks.items():
            x1, y1, x2, y2 = tr.box.tolist()
            outside = x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h
            too_big = (x2 - x1) > w and (y2 - y1) > h
            if tr.misses > self.cfg.patience or outside or too_big:
                out.append(tid)
        return out

    def _births(self, dets: Tensor, scores: Tensor, used: np.ndarray, frame: int) -> list[_Candidate]:
        """Chain unmatched confident detections over frames; return the chains confirmed now."""
        cand = np.flatnonzero(~used & (scores >= self.birth_score).numpy())
        active = [t.box for t in self.tracks.values() if t.active]
        if cand.size and active:
            ov = box_iou(dets[cand], torch.stack(active)).amax(dim=1)
            cand = cand[(ov < self.cfg.match_iou).numpy()]
        chains = self.candidates
        nxt: list[_Candidate] = []
        taken = np.zeros(cand.size, bool)
        if chains and cand.size:
            rows, cols = associate(torch.stack([c.boxes[-1] for c in chains]), dets[cand], self.cfg.birth_iou,
                                   self.cfg.match_method)
            for r, c in zip(rows.tolist(), cols.tolist()):
                ch = chains[r]
                ch.frames.append(frame)
                ch.boxes.append(dets[cand[c]].clone())
                ch.scores.append(float(scores[cand[c]]))
                nxt.append(ch)
                taken[c] = True
        for k in np.flatnonzero(~taken):
            d = int(cand[k])
            nxt.append(_Candidate([frame], [dets[d].clone()], [float(scores[d])]))
        ready = [c for c in nxt if len(c.frames) >= self.cfg.birth_wait]
        self.candidates = [c for c in nxt if len(c.frames) < self.cfg.birth_wait]
        ready.sort(key=lambda c: -c.scores[-1])
        born: list[_Candidate] = []
        for c in ready:  # no birth on top of an active track or another birth of this frame
            others = active + [b.boxes[-1] for b in born]
            if others and bool((box_iou(c.boxes[-1][None], torch.stack(others))[0] > self.cfg.nms_iou).any()):
                continue
            born.append(c)
        return born

    def _apply(self, image: np.ndarray, deaths: list[int], moves: list[int], reinits: list[int],
               births: list[_Candidate]) -> None:
        """Bring the SOT in line: remove the dead, move/re-initialise refined tracks, add the born."""
        if deaths:
            self.sot.remove(deaths)
            for tid in deaths:
                del self.tracks[tid]
        moves = [t for t in moves if t in self.tracks]
        reinits = [t for t in reinits if t in self.tracks]
        if moves and hasattr(self.sot, "move"):
            self.sot.move(moves, _xywh(torch.stack([self.tracks[t].box for t in moves])))
        if reinits:
            self.sot.reinit(image, reinits, _xywh(torch.stack([self.tracks[t].box for t in reinits])))
        if births:
            ids = list(range(self._next_id, self._next_id + len(births)))
            self._next_id += len(births)
            self.sot.add(image, _xywh(torch.stack([c.boxes[-1] for c in births])), ids)
            for tid, c in zip(ids, births):
                self.tracks[tid] = Track(tid, c.boxes[-1].clone(), c.scores[-1], hits=len(c.frames))
                if self.cfg.birth_backfill:
                    for f, b, s in zip(c.frames[:-1], c.boxes[:-1], c.scores[:-1]):
                        self._rows.add(f, tid, b, s)

    def _written(self) -> list[int]:
        """Ids written this frame: active tracks, then coasting ones not overlapping them."""
        ids = sorted(i for i, t in self.tracks.items() if t.active)
        c = self.cfg
        if c.coast_frames > 0:
            for i in sorted(self.tracks):
                t = self.tracks[i]
                if t.active or t.misses > c.coast_frames or t.sot_score < c.coast_score:
                    continue
                if ids and bool((box_iou(t.box[None], torch.stack([self.tracks[k].box for k in ids]))[0]
                                 > c.nms_iou).any()):
                    continue
                ids.append(i)
        return sorted(ids)

    def _write(self, frame: int) -> FrameOutput:
        ids = self._written()
        for i in ids:
            t = self.tracks[i]
            self._rows.add(frame, i, t.box.clone(), t.score)
        boxes = torch.stack([self.tracks[i].box for i in ids]) if ids else torch.zeros(0, 4, dtype=torch.float64)
        return FrameOutput(torch.tensor(ids, dtype=torch.int64), boxes,
                           torch.tensor([self.tracks[i].score for i in ids], dtype=torch.float64))


# --------------------------------------------------------------------------- factories
def mot_factory(sot: Callable[[], BatchedSOT], cfg: MOTConfig | dict | None = None) -> SequenceFactory:
    """The per-sequence tracker factory ``f(seq_info) -> MultiTracker`` over a fresh SOT from
    ``sot()`` for each sequence (the inference protocol, :mod:`deepmot.engine.protocol`).
    ``seq_info`` (anything with ``.name``, or None) selects the detector-specific score
    thresholds of ``cfg`` (a :class:`MOTConfig` or a dict of its fields)."""
    mot_cfg = cfg if isinstance(cfg, MOTConfig) else MOTConfig(**(cfg or {}))

    def make(seq_info: Any = None) -> MultiTracker:
        detector = split_variant(seq_info.name)[1] if seq_info is not None else None
        return MultiTracker(sot(), mot_cfg, detector=detector)

    return make


def build_mot_factory(cfg: InferenceFileConfig, checkpoint: str | None = None) -> SequenceFactory:
    """The inference factory of the tracker named ``cfg.tracker`` (registry:
    :func:`trackers.get_tracker`) with weights ``checkpoint`` or ``cfg.checkpoint``."""
    from trackers import get_tracker

    return get_tracker(cfg.tracker).build_inference(cfg, checkpoint or cfg.checkpoint or None)
