"""Template/search training pairs for SiamRPN, cut from the GT of MOTChallenge-format sequences.

PySOT-style sampling (spec ``pysot.md`` §7.1): a positive pair is one object in two frames at
most ``frame_range`` apart; a negative pair (probability ``neg``) puts another object in the
search crop. Crops use SiamFC context geometry (``s_z = sqrt((w + p)(h + p))``,
``p = context_amount * (w + h)``; search side ``s_z * search_size / exemplar_size``), padded
with the image's mean colour, with PySOT's augmentations: independent x/y scale jitter
``1 + U(-1,1) * scale``, a shift of ``U(-1,1) * shift`` crop pixels, colour jitter, optional grey.

Coordinates: MOT files are 1-based; here boxes are converted to 0-based pixel-centre
coordinates as PySOT's tracker uses them (centre ``x0 + (w - 1) / 2``). Crops are float32 BGR
0..255, CHW.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from deepmot.datasets.mot import SeqInfo, gt_sequences, read_gt, split_variant
from deepmot.errors import MissingDataError

from .config import SiamRPNConfig

__all__ = ["TrackRecord", "DriftRecord", "PairSampler", "PairBatch", "crop_affine", "context_side"]


@dataclass
class TrackRecord:
    """GT of one object in one sequence: 1-based ``frames (T,)`` and 0-based ``xywh (T, 4)``."""

    seq: int
    ident: int
    frames: np.ndarray
    xywh: np.ndarray


@dataclass
class DriftRecord:
    """Where a tracker looked for an object: sequence base name ``seq`` (``MOT17-02``), object
    ``ident``, 1-based ``frame`` and ``view`` ``(cx, cy, w, h)`` image pixels, the tracker's state
    before that frame (its search crop is centred there, sized from ``w, h``)."""

    seq: str
    ident: int
    frame: int
    view: tuple[float, float, float, float]


@dataclass
class PairBatch:
    """A batch of B pairs: ``template (B,3,Z,Z)``, ``search (B,3,X,X)`` float32 BGR 0..255,
    ``target (B,4)`` float32 ``cx, cy, w, h`` of the search object in search-crop pixels
    (pixel-centre coordinates, crop centre at ``(X-1)/2``), ``positive (B,)`` bool."""

    template: Tensor
    search: Tensor
    target: Tensor
    positive: Tensor


def context_side(w: float, h: float, context_amount: float) -> float:
    """SiamFC template window side ``sqrt((w + p)(h + p))``, ``p = context_amount * (w + h)``."""
    p = context_amount * (w + h)
    return float(np.sqrt((w + p) * (h + p)))


def crop_affine(img: np.ndarray, center: tuple[float, float], scale: tuple[float, float],
                out_size: int, pad: np.ndarray) -> np.ndarray:
    """Square crop ``(out_size, out_size, 3)`` uint8 of ``img`` by one affine warp: image point
    ``p`` goes to ``scale * (p - center) + (out_size - 1) / 2`` (per axis); outside pixels get
    ``pad`` (BGR)."""
    c = (out_size - 1) / 2
    m = np.array([[scale[0], 0.0, c - scale[0] * center[0]],
                  [0.0, scale[1], c - scale[1] * center[1]]], dtype=np.float64)
    return cv2.warpAffine(img, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in pad))


class PairSampler:
    """Samples :class:`PairBatch` es from the sequences of ``root/split`` (one detector variant
    per MOT17 sequence, none of the base names in ``exclude``; GT rows of class 1, flag 1 with
    visibility >= ``min_vis``).

    ``cfg`` gives the crop sizes (``exemplar_size``, ``train.search_size``), context and the
    augmentation/sampling settings of ``cfg.train``. Raises MissingDataError when the split has
    no usable track. Decoded frames and their mean colours are cached (``cache_images`` frames
    at most, first-in-first-out; None: every frame, ~0.7 MB per 640x360 frame), so each JPEG is
    decoded once per run. ``hard_negatives``: share of negative pairs whose search object is
    another object of the same sequence near the template's frame (instead of any object).
    """

    def __init__(self, root: str | os.PathLike, cfg: SiamRPNConfig, split: str = "train",
                 min_vis: float = 0.5, min_size: float = 8.0, cache_images: int | None = None,
                 exclude: list[str] | tuple[str, ...] = (), hard_negatives: float = 0.0):
        self.cfg = cfg
        self.sequences: list[SeqInfo] = []
        self.tracks: list[TrackRecord] = []
        for _, info in gt_sequences(root, split, exclude):
            rows = read_gt(info.gt_path, info.seq_length)
            ctr = rows.xywh[:, :2] - 1 + rows.xywh[:, 2:] / 2  # centre inside the image
            keep = (rows.cls == 1) & (rows.conf == 1) & (rows.vis >= min_vis) \
                & (rows.xywh[:, 2] >= min_size) & (rows.xywh[:, 3] >= min_size) \
                & (ctr[:, 0] >= 0) & (ctr[:, 0] < info.im_width) \
                & (ctr[:, 1] >= 0) & (ctr[:, 1] < info.im_height)
            rows = rows.select(keep)
            seq_idx = len(self.sequences)
            self.sequences.append(info)
            for ident in np.unique(rows.id):
                sel = rows.id == ident
                order = np.argsort(rows.frame[sel])
                xywh = rows.xywh[sel][order].copy()
                xywh[:, :2] -= 1.0  # 1-based file origin -> 0-based pixels
                if len(order) >= 2:
                    self.tracks.append(TrackRecord(seq_idx, int(ident), rows.frame[sel][order], xywh))
        if not self.tracks:
            raise MissingDataError(f"no usable GT tracks in split '{split}'", Path(root))
        self.hard_negatives = hard_negatives
        self._drift: list[tuple[int, int, np.ndarray]] = []
        self.drift = 0.0
        self._by_seq = [[t for t in self.tracks if t.seq == k] for k in range(len(self.sequences))]
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_images

    # ------------------------------------------------------------------ images
    def image(self, seq: int, frame: int) -> np.ndarray:
        """BGR uint8 image ``(H, W, 3)`` of 1-based ``frame`` of sequence ``seq`` (cached)."""
        return self._frame(seq, frame)[0]

    def _frame(self, seq: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``(image, mean BGR colour (3,) float64)`` of a frame."""
        key = (seq, frame)
        hit = self._cache.get(key)
        if hit is None:
            path = self.sequences[seq].image_path(frame)
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise MissingDataError("image missing or unreadable", path)
            mean = np.asarray(cv2.mean(img)[:3], dtype=np.float64)
            if self._cache_size is not None and len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            hit = self._cache[key] = (img, mean)
        return hit

    # ------------------------------------------------------------------ sampling
    def _pick(self, rng: np.random.Generator) -> tuple[TrackRecord, int, int]:
        tr = self.tracks[rng.integers(len(self.tracks))]
        i = int(rng.integers(len(tr.frames)))
        near = np.nonzero(np.abs(tr.frames - tr.frames[i]) <= self.cfg.train.frame_range)[0]
        return tr, i, int(rng.choice(near))

    def _crop(self, rng: np.random.Generator, tr: TrackRecord, i: int, out_size: int,
              shift: float, scale: float, gray: bool,
              view: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Crop row ``i`` of ``tr`` to ``out_size`` with jitter; returns (crop HWC uint8, target
        cxcywh). The crop is centred on, and scaled for, the GT box, or ``view`` ``(cx, cy, w, h)``
        (image pixels) when given: a tracker's state, the object then where it is relative to it."""
        t = self.cfg.train
        img, mean = self._frame(tr.seq, int(tr.frames[i]))
        x, y, w, h = tr.xywh[i]
        cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
        vx, vy, vw, vh = (cx, cy, w, h) if view is None else view
        s_z = context_side(vw, vh, self.cfg.context_amount)
        base = self.cfg.exemplar_size / s_z  # crop pixels per image pixel (no jitter)
        f = 1.0 + rng.uniform(-1, 1, size=2) * scale  # crop box grows by f: target shrinks
        k = base / f
        d = rng.uniform(-1, 1, size=2) * shift        # target moves by -d in the crop
        center = (vx + d[0] / k[0], vy + d[1] / k[1])
        crop = crop_affine(img, center, (k[0], k[1]), out_size, mean)
        c = (out_size - 1) / 2
        target = np.array([c + k[0] * (cx - vx) - d[0], c + k[1] * (cy - vy) - d[1], w * k[0], h * k[1]],
                          dtype=np.float32)
        if gray:
            crop = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if rng.random() < t.color:
            gain = 1.0 + rng.normal(0, 0.1, size=3)
            offset = rng.normal(0, 8.0, size=3)
            crop = np.clip(crop.astype(np.float32) * gain + offset, 0, 255)
        return crop.astype(np.float32), target

    def _negative(self, rng: np.random.Generator, tr: TrackRecord, frame: int) -> tuple[TrackRecord, int]:
        """Another object for a negative pair: with probability ``hard_negatives`` one of the same
        sequence in the frame nearest ``frame`` (a look-alike in the same scene), else any other
        object in any of its frames."""
        same = self._by_seq[tr.seq]
        if self.hard_negatives > 0 and len(same) > 1 and rng.random() < self.hard_negatives:
            other = tr
            while other is tr:
                other = same[rng.integers(len(same))]
            return other, int(np.argmin(np.abs(other.frames - frame)))
        other = tr
        while other is tr:
            other = self.tracks[rng.integers(len(self.tracks))]
        return other, int(rng.integers(len(other.frames)))

    def add_drift(self, records: list[DriftRecord], share: float) -> int:
        """Use tracker states (tracking in the loop): a share ``share`` of the pairs becomes a
        record's object, template from its first usable box (a tracker's template is its first
        box), search crop where the tracker looked (``view``; little jitter), the object at its
        true place in it. Records of boxes this sampler does not use (too occluded, too small)
        are dropped; returns how many were kept."""
        rows = {(split_variant(self.sequences[tr.seq].name)[0], tr.ident): k
                for k, tr in enumerate(self.tracks)}
        self._drift = []
        for r in records:
            k = rows.get((r.seq, r.ident))
            if k is None:
                continue
            j = np.nonzero(self.tracks[k].frames == r.frame)[0]
            if len(j):
                self._drift.append((k, int(j[0]), np.asarray(r.view, dtype=np.float64)))
        self.drift = share
        return len(self._drift)

    def sample(self, batch_size: int, rng: np.random.Generator) -> PairBatch:
        """``batch_size`` pairs drawn with ``rng`` (the only source of randomness)."""
        t = self.cfg.train
        zs, xs, targets, pos = [], [], [], []
        for _ in range(batch_size):
            view = None
            if self._drift and rng.random() < self.drift:
                k, j, view = self._drift[rng.integers(len(self._drift))]
                tr, i = self.tracks[k], 0
            else:
                tr, i, j = self._pick(rng)
            gray = rng.random() < t.gray
            negative = view is None and rng.random() < t.neg and len(self.tracks) > 1
            z, _ = self._crop(rng, tr, i, self.cfg.exemplar_size, t.template_shift,
                              t.template_scale, gray)
            if negative:
                tr, j = self._negative(rng, tr, int(tr.frames[i]))
            jitter = 1.0 if view is None else 0.25  # the tracker's own crop: a quarter of the jitter
            x, target = self._crop(rng, tr, j, t.search_size, t.search_shift * jitter,
                                   t.search_scale * jitter, gray, view)
            zs.append(z.transpose(2, 0, 1))
            xs.append(x.transpose(2, 0, 1))
            targets.append(target)
            pos.append(not negative)
        return PairBatch(torch.from_numpy(np.stack(zs)), torch.from_numpy(np.stack(xs)),
                         torch.from_numpy(np.stack(targets)), torch.tensor(pos))
