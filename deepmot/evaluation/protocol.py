"""The official MOTChallenge preprocessing: from parsed GT/result rows to per-frame evaluation data.

Per frame (as TrackEval's ``MotChallenge2DBox`` does, DO_PREPROC=True):

1. tracker boxes are matched (Hungarian, maximising IoU, IoU >= 0.5) to *all* GT rows of the
   frame (every class, flag 0 included);
2. tracker boxes matched to a distractor class (2 person_on_vehicle, 7 static_person,
   8 distractor, 12 reflection; plus 6 non_mot_vehicle for MOT20) are removed;
3. only GT rows with class 1 (pedestrian) and a non-zero flag (column 7) are kept.

``Protocol("none")`` switches steps 1-3 off for custom data: nothing is removed and every GT row
with a non-zero flag is scored whatever its class (TrackEval with DO_PREPROC=False).
Visibility is never used. IDs are relabelled to contiguous ``0..n-1`` per sequence; rows keep
their file order inside a frame (it decides Hungarian tie-breaks, exactly as in TrackEval).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from deepmot.datasets.mot import MOTRows
from deepmot.errors import DataFormatError
from deepmot.evaluation.iou import EPS, iou_xywh

__all__ = ["Protocol", "PROTOCOLS", "SequenceData", "preprocess", "VALID_GT_CLASSES"]

#: GT classes defined by MOT16/17/20 (1 pedestrian ... 13 crowd).
VALID_GT_CLASSES = tuple(range(1, 14))


@dataclass(frozen=True)
class Protocol:
    """Preprocessing rules. ``name`` is ``"mot17"`` (= MOT16), ``"mot20"`` or ``"none"``."""

    name: str = "mot17"
    target_class: int = 1
    distractor_classes: tuple[int, ...] = (2, 7, 8, 12)
    distractor_iou: float = 0.5
    enabled: bool = True

    def describe(self) -> str:
        """One line for reports."""
        if not self.enabled:
            return "none (GT rows with flag != 0 scored, all classes; no distractor removal)"
        return (
            f"{self.name.upper()} official (GT class {self.target_class} with flag != 0 scored; tracker boxes "
            f"matched at IoU >= {self.distractor_iou} to GT classes {list(self.distractor_classes)} removed)"
        )


PROTOCOLS: dict[str, Protocol] = {
    "mot17": Protocol("mot17"),
    "mot16": Protocol("mot16"),
    "mot20": Protocol("mot20", distractor_classes=(2, 6, 7, 8, 12)),
    "none": Protocol("none", distractor_classes=(), enabled=False),
}


@dataclass
class SequenceData:
    """One sequence ready for scoring (``T = num_frames`` entries per list, index ``t = frame - 1``).

    ``gt_ids[t]`` (G_t,) / ``tracker_ids[t]`` (K_t,) int64 contiguous ids; ``similarity[t]``
    (G_t, K_t) float64 IoU (rows GT, columns tracker boxes, TrackEval's orientation);
    ``gt_boxes[t]``/``tracker_boxes[t]`` xywh pixels of the kept rows. ``gt_id_values`` /
    ``tracker_id_values`` map contiguous ids back to the file's ids. ``num_removed``: tracker boxes
    removed as distractor matches.
    """

    name: str
    num_frames: int
    gt_ids: list[np.ndarray]
    tracker_ids: list[np.ndarray]
    similarity: list[np.ndarray]
    gt_boxes: list[np.ndarray]
    tracker_boxes: list[np.ndarray]
    gt_id_values: np.ndarray
    tracker_id_values: np.ndarray
    num_removed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_gt_ids(self) -> int:
        return int(self.gt_id_values.shape[0])

    @property
    def num_tracker_ids(self) -> int:
        return int(self.tracker_id_values.shape[0])

    @property
    def num_gt_dets(self) -> int:
        return int(sum(len(g) for g in self.gt_ids))

    @property
    def num_tracker_dets(self) -> int:
        return int(sum(len(k) for k in self.tracker_ids))

    def trackeval_dict(self) -> dict:
        """The preprocessed-data dict TrackEval's metric classes take (``eval_sequence(data)``)."""
        return {
            "seq": self.name,
            "num_timesteps": self.num_frames,
            "num_gt_ids": self.num_gt_ids,
            "num_tracker_ids": self.num_tracker_ids,
            "num_gt_dets": self.num_gt_dets,
            "num_tracker_dets": self.num_tracker_dets,
            "gt_ids": self.gt_ids,
            "tracker_ids": self.tracker_ids,
            "similarity_scores": self.similarity,
        }


def _by_frame(rows: MOTRows, num_frames: int) -> list[np.ndarray]:
    """Row indices of each frame 1..num_frames, file order kept (frames outside are an error upstream)."""
    out = [np.zeros(0, np.int64)] * num_frames
    for f, idx in rows.frames_index().items():
        out[f - 1] = idx
    return out


def _relabel(ids_per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """File ids -> contiguous ``0..n-1`` (sorted by file id). Returns (per-frame ids, id values)."""
    if not ids_per_frame:
        return [], np.zeros(0, np.int64)
    values = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.zeros(0, np.int64)
    return [np.searchsorted(values, ids).astype(np.int64) for ids in ids_per_frame], values.astype(np.int64)


def _check_rows(gt: MOTRows, res: MOTRows, protocol: Protocol) -> None:
    bad = res.cls > 1
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"tracker class {res.cls[k]} > 1: MOTChallenge evaluates pedestrians only "
            "(write -1 or 1 in column 8)", res.path, int(res.line[k]), "class")
    if protocol.enabled and len(gt):
        bad = ~np.isin(gt.cls, VALID_GT_CLASSES)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"unknown GT class {gt.cls[k]} (MOTChallenge classes are 1..13); "
                "use protocol 'none' for custom data", gt.path, int(gt.line[k]), "class")


def preprocess(name: str, gt: MOTRows, res: MOTRows, num_frames: int | None = None,
               protocol: Protocol | str = "mot17") -> SequenceData:
    """Apply the MOTChallenge protocol to one sequence's GT and result rows -> :class:`SequenceData`.

    ``gt``/``res``: rows as read by :func:`deepmot.datasets.mot.read_gt` / ``read_results`` (xywh
    pixels, frames 1-based). ``num_frames``: the sequence length (``seqLength``); default: the
    last frame present in either file. Raises DataFormatError (file, line, field) for a tracker
    class > 1 and, when preprocessing, for GT classes outside 1..13.
    """
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol]
    _check_rows(gt, res, protocol)
    if num_frames is None:
        last = [int(r.frame.max()) for r in (gt, res) if len(r)]
        num_frames = max(last, default=0)
    gt_rows = _by_frame(gt, num_frames)
    res_rows = _by_frame(res, num_frames)
    gt_flag = gt.conf.astype(np.int64)  # TrackEval truncates the flag column to int
    if protocol.enabled:
        gt_keep = (gt_flag != 0) & (gt.cls == protocol.target_class)
        gt_distractor = np.isin(gt.cls, protocol.distractor_classes)
    else:
        gt_keep = gt_flag != 0
        gt_distractor = np.zeros(len(gt), bool)

    gt_ids, trk_ids, sims, gt_boxes, trk_boxes = [], [], [], [], []
    removed = 0
    for t in range(num_frames):
        gi, ri = gt_rows[t], res_rows[t]
        sim = iou_xywh(gt.xywh[gi], res.xywh[ri])
        if protocol.enabled and len(gi) and len(ri) and gt_distractor[gi].any():
            scores = sim.copy()
            scores[scores < protocol.distractor_iou - EPS] = 0
            rows, cols = linear_sum_assignment(-scores)
            ok = scores[rows, cols] > 0 + EPS
            drop = cols[ok & gt_distractor[gi][rows]]
            if len(drop):
                keep_r = np.ones(len(ri), bool)
                keep_r[drop] = False
                ri = ri[keep_r]
                sim = sim[:, keep_r]
                removed += int(len(drop))
        keep_g = gt_keep[gi]
        gi = gi[keep_g]
        sims.append(sim[keep_g])
        gt_ids.append(gt.id[gi])
        trk_ids.append(res.id[ri])
        gt_boxes.append(gt.xywh[gi])
        trk_boxes.append(res.xywh[ri])
    gt_ids, gt_values = _relabel(gt_ids)
    trk_ids, trk_values = _relabel(trk_ids)
    return SequenceData(name, num_frames, gt_ids, trk_ids, sims, gt_boxes, trk_boxes,
                        gt_values, trk_values, removed)
