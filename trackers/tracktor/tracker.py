"""Tracktor: tracking by regressing last frame's boxes with the detector's second stage.

Per frame (:meth:`TracktorTracker.step`), for all tracks at once (Bergmann et al., ICCV 2019):

1. the frame's FPN features, once; camera-motion compensation (ECC) of every box; the optional
   constant-velocity motion model;
2. every live box regressed and scored by the RoI head on the new frame; tracks whose person score is
   not above ``reg_thresh`` go inactive, and of two overlapping live tracks (IoU > ``reg_nms``) the
   weaker one (greedy NMS);
3. detections: public ``det.txt`` boxes refined by the same RoI head, or the detector's own
   (``detections: private``), above ``det_thresh``, NMS'ed, and dropped where a live track covers
   them (IoU > ``cover_iou``, by default ``det_nms``);
4. re-identification: remaining detections re-activate inactive tracks whose box they overlap
   (IoU >= ``reid_iou``) and whose mean appearance is close (``0.5 * (1 - cos) <= reid_sim``),
   one to one (Hungarian); the others start new tracks;
5. live tracks are written; inactive ones die after ``patience`` frames.

Options: :class:`~trackers.tracktor.config.TracktorConfig`. The network: :class:`~trackers.tracktor.model.TracktorNet`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

from deepmot.boxes import box_iou
from deepmot.engine.protocol import SequenceFactory
from trackers.tracktor.appearance import appearance_distance
from trackers.tracktor.cmc import ecc_warp, warp_boxes
from trackers.tracktor.config import TracktorConfig
from trackers.tracktor.model import FrameFeatures, TracktorNet
from trackers.tracktor.tracks import TrackSet

__all__ = ["TracktorTracker", "tracktor_factory"]

#: a distance that no threshold accepts (pairs outside the IoU gate)
_FAR = 1e3


class TracktorTracker:
    """Tracktor over one sequence (the inference protocol's ``SequenceTracker``); create one per sequence.

    ``net``: a :class:`TracktorNet` in eval mode; ``cfg``: :class:`TracktorConfig`. Boxes in and out
    are MOTChallenge pixels (used as the detector's array coordinates, as it was trained).
    ``timing``: seconds spent in the network (``"sot"``) and in the rest (``"assoc"``).
    """

    def __init__(self, net: TracktorNet, cfg: TracktorConfig | None = None):
        self.net, self.cfg = net, cfg or TracktorConfig()
        dim = self._embed_dim()
        history = self.cfg.motion_steps + 1
        self.active = TrackSet.empty(history, self.cfg.max_features, dim, net.device)
        self.inactive = TrackSet.empty(history, self.cfg.max_features, dim, net.device)
        self.next_id = 1
        self.prev_gray: np.ndarray | None = None
        self.rows: list[np.ndarray] = []
        self.timing = {"sot": 0.0, "assoc": 0.0}

    def _embed_dim(self) -> int:
        if self.cfg.embedding == "roi_pool":
            return self.net._pooled_dim()
        return self.net.reid_head.out_features if self.net.reid_head is not None else self.net.rep_dim()

    # ------------------------------------------------------------------ helpers
    def _to_inactive(self, tracks: TrackSet) -> None:
        """Move ``tracks`` (already removed from the active set) to the inactive pool, each at its
        last box before this frame's regression."""
        if len(tracks) == 0:
            return
        tracks.pos = tracks.last_box()
        tracks.idle = torch.zeros_like(tracks.idle)
        self.inactive = self.inactive.cat(tracks)

    def _move(self, tracks: TrackSet) -> None:
        """Constant-velocity motion model, in place."""
        v = tracks.velocity()
        if self.cfg.motion_center_only:
            c = (v[:, :2] + v[:, 2:]) / 2
            v = torch.cat([c, c], 1)
        tracks.pos = tracks.pos + v

    def _detections(self, ff: FrameFeatures, det_boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Refined public detections or private ones, above ``det_thresh``, NMS'ed: ``(D, 4)``, ``(D,)``."""
        if self.cfg.detections == "private":
            boxes, scores = self.net.detect(ff)
        else:
            out = self.net.regress(ff, torch.as_tensor(det_boxes, dtype=torch.float32).reshape(-1, 4))
            boxes, scores = out.boxes, out.scores
        keep = (scores > self.cfg.det_thresh) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, self.cfg.det_nms)
        return boxes[keep], scores[keep]

    def _reid(self, boxes: Tensor, feats: Tensor) -> Tensor:
        """Re-activate inactive tracks from detections ``boxes (D, 4)`` with appearance ``feats (D, E)``;
        returns the bool mask of the detections used."""
        used = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        if len(self.inactive) == 0 or len(boxes) == 0:
            return used
        from scipy.optimize import linear_sum_assignment

        dist = appearance_distance(self.inactive.mean_features(), feats)
        dist = torch.where(box_iou(self.inactive.pos, boxes) >= self.cfg.reid_iou, dist, torch.full_like(dist, _FAR))
        d = dist.detach().cpu().double().numpy()
        r, c = linear_sum_assignment(d)
        ok = d[r, c] <= self.cfg.reid_sim
        r = torch.as_tensor(r[ok], dtype=torch.long, device=boxes.device)
        c = torch.as_tensor(c[ok], dtype=torch.long, device=boxes.device)
        if len(r):
            back = self.inactive.take(r)
            back.pos, back.score = boxes[c], back.score.new_ones(len(c))
            back.hist = torch.zeros_like(back.hist)
            back.nhist = torch.zeros_like(back.nhist)
            back.idle = torch.zeros_like(back.idle)
            back.add_features(torch.arange(len(c), device=c.device), feats[c])
            keep = torch.ones(len(self.inactive), dtype=torch.bool, device=boxes.device)
            keep[r] = False
            self.inactive = self.inactive.take(keep)
            self.active = self.active.cat(back)
            used[c] = True
        return used

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, image: np.ndarray, det_boxes: Tensor, det_scores: Tensor, frame: int) -> None:
        """Track into frame ``frame`` (1-based): BGR uint8 ``image``, public detections
        ``det_boxes (D, 4)`` xyxy pixels (unused in private mode) and ``det_scores (D,)`` (unused:
        the RoI head scores every box)."""
        cfg, net = self.cfg, self.net
        t0 = time.perf_counter()
        ff = net.frame(image)
        t_net = time.perf_counter() - t0
        t1 = time.perf_counter()
        if cfg.cmc and self.prev_gray is not None and (len(self.active) or len(self.inactive)):
            warp = ecc_warp(self.prev_gray, ff.gray, cfg.cmc_mode, cfg.cmc_iterations, cfg.cmc_eps, cfg.cmc_scale)
            for ts in (self.active, self.inactive):
                ts.pos, ts.hist = warp_boxes(ts.pos, warp), warp_boxes(ts.hist, warp)
        self.prev_gray = ff.gray
        t_other = time.perf_counter() - t1

        t0 = time.perf_counter()
        a = self.active
        if len(a):
            a.push_history()
            if cfg.motion:
                self._move(a)
            a = a.take(a.positive_area())
            out = net.regress(ff, a.pos)
            alive = out.scores > cfg.reg_thresh
            self._to_inactive(a.take(~alive))
            a, boxes, scores = a.take(alive), out.boxes[alive], out.scores[alive]
            keep = nms(boxes, scores, cfg.reg_nms)
            drop = torch.ones(len(a), dtype=torch.bool, device=boxes.device)
            drop[keep] = False
            self._to_inactive(a.take(drop))
            a = a.take(keep)
            a.pos, a.score = boxes[keep], scores[keep]
            if cfg.reid and len(a):
                a.add_features(torch.arange(len(a), device=a.pos.device),
                               net.embed(net.regress(ff, a.pos), cfg.embedding))
        self.active = a
        if cfg.motion and len(self.inactive):
            self._move(self.inactive)

        boxes, scores = self._detections(ff, det_boxes)
        if len(boxes) and len(self.active):
            cover = cfg.det_nms if cfg.cover_iou is None else cfg.cover_iou
            covered = (box_iou(self.active.pos, boxes) > cover).any(0)
            boxes, scores = boxes[~covered], scores[~covered]
        feats = None
        if len(boxes):
            if cfg.reid:
                feats = net.embed(net.regress(ff, boxes), cfg.embedding)
                used = self._reid(boxes, feats)
                boxes, scores, feats = boxes[~used], scores[~used], feats[~used]
            if len(boxes):
                ids = torch.arange(self.next_id, self.next_id + len(boxes))
                self.next_id += len(boxes)
                self.active = self.active.cat(self.active.new(ids, boxes, scores, feats))
        t_net += time.perf_counter() - t0

        t1 = time.perf_counter()
        a = self.active
        if len(a):
            xyxy = a.pos.detach().cpu().double()
            self.rows.append(np.concatenate([np.full((len(a), 1), float(frame)), a.ids.cpu().double()[:, None].numpy(),
                                             xyxy[:, :2].numpy(), (xyxy[:, 2:] - xyxy[:, :2]).numpy(),
                                             a.score.cpu().double()[:, None].numpy()], 1))
        ina = self.inactive
        ina.idle = ina.idle + 1
        self.inactive = ina.take((ina.idle <= cfg.patience) & ina.positive_area())
        self.timing["sot"] += t_net
        self.timing["assoc"] += t_other + time.perf_counter() - t1

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(frames (R,), ids (R,), boxes (R, 4) x, y, w, h, scores (R,))`` written so far."""
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, 7))
        return rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2:6], rows[:, 6]


def tracktor_factory(net: TracktorNet, cfg: TracktorConfig | None = None) -> SequenceFactory:
    """Per-sequence factory ``f(seq_info) -> TracktorTracker`` sharing ``net``."""
    cfg = cfg or TracktorConfig()

    def make(seq_info: Any) -> TracktorTracker:
        return TracktorTracker(net, cfg)

    return make
