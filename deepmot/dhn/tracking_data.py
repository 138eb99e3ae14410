"""Distance matrices from MOT-format sequences: real-geometry DHN training and evaluation data.

DeepMOT v2 trained its DHN on matrices built from MOT Challenge GT and public detections, with
threshold augmentation and row/column permutations (paper §4 / v2 ``train_DHN``). This module
builds the same kind of matrices from any MOT-format dataset (the built-in synthetic set by
default) and mixes them into the random stream of :mod:`deepmot.dhn.data`.

A *pair* is one frame's hypothesis boxes against its GT boxes (pixels, xyxy) and the image size.
Hypotheses come from these sources:

* ``det``: the frame's public detections (every flavour folder: DPM, FRCNN, SDP);
* ``lag``: the GT of ``k`` frames earlier (a tracker that does not move: stale positions,
  objects gone and new ones missing);
* ``jitter``: the frame's GT jittered, some boxes dropped and false ones added
  (:func:`deepmot.dhn.data.hypotheses`, the random stream's track generator), drawn on the fly;
* ``results``: tracker result files, when given (the evaluation on real tracker output).

GT is the scored pedestrians (class 1, flag 1). Distances, gating and targets follow the one
convention of the criterion: :func:`deepmot.boxes.deepmot_distance`,
:func:`deepmot.boxes.forbidden_mask` (IoU threshold) and the exact gated Hungarian target
(:func:`deepmot.dhn.data.exact_sample`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from deepmot.boxes import box_iou, cxcywh_to_xyxy, deepmot_distance, forbidden_mask, xyxy_to_cxcywh
from deepmot.datasets.layout import discover_sequences, split_variant
from deepmot.datasets.mot import read_gt, read_results
from deepmot.datasets.sequence import Sequence as MOTSequence
from deepmot.dhn.data import (DHNBatch, DHNDataConfig, DHNSample, _draw_shape, _draw_threshold,
                              batch_stream, exact_sample, hypotheses, make_batch)

__all__ = ["BoxPair", "sample_from_pair", "jittered_pair", "sequence_pairs", "results_pairs",
           "TrackingPool", "mixed_stream", "dataset_root", "LAGS"]

#: Frame offsets of the ``lag`` source (GT of frame ``t - k`` as hypotheses of frame ``t``).
LAGS = (2, 5, 10)


class BoxPair(NamedTuple):
    """One frame: ``hyp`` (N, 4) and ``gt`` (M, 4) float32 xyxy pixel boxes, ``size`` (W, H), ``source``."""

    hyp: Tensor
    gt: Tensor
    size: tuple[float, float]
    source: str


def sample_from_pair(pair: BoxPair, iou_threshold: float | None = 0.5,
                     rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> DHNSample:
    """The DHN sample of ``pair``: DeepMOT distance (rows = hypotheses, columns = GT), pairs with
    ``IoU < iou_threshold`` forbidden (None: ungated), exact target. ``rows``/``cols``: optional
    index arrays picking (and ordering) a subset of hypotheses/GT."""
    hyp = pair.hyp if rows is None else pair.hyp[torch.as_tensor(rows, dtype=torch.long)]
    gt = pair.gt if cols is None else pair.gt[torch.as_tensor(cols, dtype=torch.long)]
    d = deepmot_distance(hyp, gt, pair.size)
    return exact_sample(d, forbidden_mask(box_iou(hyp, gt), iou_threshold))


def jittered_pair(rng: np.random.Generator, gt: Tensor, size: tuple[float, float],
                  n: int | None = None) -> BoxPair:
    """``gt`` (M, 4) xyxy with ``n`` jittered / dropped / false hypotheses (default: M - M/3 .. M + M/2,
    at least 1) from :func:`deepmot.dhn.data.hypotheses`."""
    m = gt.shape[0]
    if n is None:
        n = int(rng.integers(max(1, m - m // 3), m + m // 2 + 2))
    hyp = hypotheses(rng, xyxy_to_cxcywh(gt.double()).numpy(), n, float(size[0]), float(size[1]))
    return BoxPair(cxcywh_to_xyxy(torch.from_numpy(hyp)).float(), gt, size, "jitter")


def _scored(frame) -> Tensor:
    return frame.gt_boxes[frame.scored_gt_mask()]


def sequence_pairs(root, split: str = "train", lags: Sequence[int] = LAGS) -> tuple[list[BoxPair], list[BoxPair]]:
    """Pairs of every sequence with GT under ``root/split`` -> ``(pairs, gt_frames)``.

    ``pairs``: ``det`` pairs of every detector-flavour folder and ``lag`` pairs (once per base
    sequence); ``gt_frames``: one ``BoxPair`` per GT frame (``hyp`` = ``gt``, source ``"gt"``),
    the material of the ``jitter`` source. Frames with no scored GT or no hypothesis are skipped.
    """
    pairs, gt_frames, seen = [], [], set()
    for info in discover_sequences(root, split):
        if not info.gt_path.is_file():
            continue
        seq = MOTSequence(info, load_images=False)
        size = (float(info.im_width), float(info.im_height))
        base, _ = split_variant(info.name)
        first = base not in seen
        seen.add(base)
        frames = {f.index: f for f in seq}
        for t, f in frames.items():
            gt = _scored(f)
            if gt.shape[0] == 0:
                continue
            if f.det_boxes.shape[0]:
                pairs.append(BoxPair(f.det_boxes, gt, size, "det"))
            if first:
                gt_frames.append(BoxPair(gt, gt, size, "gt"))
                for k in lags:
                    if t - k in frames and _scored(frames[t - k]).shape[0]:
                        pairs.append(BoxPair(_scored(frames[t - k]), gt, size, f"lag{k}"))
    return pairs, gt_frames


def results_pairs(gt_path, results_path, size: tuple[float, float]) -> list[BoxPair]:
    """One pair per frame of a tracker result file against scored GT (class 1, flag 1) of a
    ``gt.txt``; frames where either side is empty are skipped."""
    gt, res = read_gt(gt_path), read_results(results_path)
    gt = gt.select((gt.cls == 1) & (gt.conf == 1))
    gi, ri = gt.frames_index(), res.frames_index()
    gxy, rxy = torch.from_numpy(gt.xyxy()).float(), torch.from_numpy(res.xyxy()).float()
    return [BoxPair(rxy[torch.from_numpy(ri[t])], gxy[torch.from_numpy(gi[t])], size, "results")
            for t in sorted(set(gi) & set(ri))]


class TrackingPool:
    """Real-geometry pairs of a dataset split, drawn into same-shape batches.

    A batch of shape ``(n, m)`` holds matrices whose ``n`` rows and ``m`` columns are random
    subsets of one pair's hypotheses and GT (only pairs with at least that many are eligible;
    the ``jitter`` source generates exactly ``n`` hypotheses), kept in file order or permuted
    (probability 1/2 each, rows and columns independently), each with its own IoU threshold
    (:func:`deepmot.dhn.data._draw_threshold`). ``jitter_share``: share of matrices from the
    ``jitter`` source.
    """

    def __init__(self, pairs: list[BoxPair], gt_frames: list[BoxPair], jitter_share: float = 0.3):
        if not pairs and not gt_frames:
            raise ValueError("TrackingPool: no pairs (no sequence with GT found)")
        self.pairs, self.gt_frames, self.jitter_share = pairs, gt_frames, jitter_share
        self._n = np.array([p.hyp.shape[0] for p in pairs], dtype=np.int64)
        self._m = np.array([p.gt.shape[0] for p in pairs], dtype=np.int64)
        self._gm = np.array([p.gt.shape[0] for p in gt_frames], dtype=np.int64)

    @classmethod
    def from_dataset(cls, root, split: str = "train", jitter_share: float = 0.3) -> "TrackingPool":
        """All pairs of ``root/split`` (:func:`sequence_pairs`)."""
        return cls(*sequence_pairs(root, split), jitter_share=jitter_share)

    def _subset(self, rng: np.random.Generator, total: int, k: int) -> np.ndarray:
        idx = rng.choice(total, size=k, replace=False)
        return np.sort(idx) if rng.uniform() < 0.5 else idx

    def draw(self, rng: np.random.Generator, n: int, m: int, cfg: DHNDataConfig) -> DHNSample:
        """One ``(n, m)`` sample (see the class docstring); falls back to ``jitter`` when no pair
        has ``n`` hypotheses and ``m`` GT."""
        ok = np.flatnonzero((self._n >= n) & (self._m >= m))
        threshold = _draw_threshold(rng, cfg, allow_ungated=True)
        gok = np.flatnonzero(self._gm >= m)
        if len(ok) == 0 or (len(gok) and rng.uniform() < self.jitter_share):
            if len(gok) == 0:
                raise ValueError(f"TrackingPool: no GT frame with {m} objects")
            g = self.gt_frames[int(rng.choice(gok))]
            gt = g.gt[torch.from_numpy(self._subset(rng, g.gt.shape[0], m))]
            return sample_from_pair(jittered_pair(rng, gt, g.size, n), threshold)
        p = self.pairs[int(rng.choice(ok))]
        return sample_from_pair(p, threshold, self._subset(rng, p.hyp.shape[0], n),
                                self._subset(rng, p.gt.shape[0], m))

    def shape(self, rng: np.random.Generator, max_size: int) -> tuple[int, int]:
        """A batch shape: a random pair's own ``(N, M)`` capped at ``max_size``, shrunk at random
        (each side uniform in ``1..side``) half of the time."""
        k = int(rng.integers(len(self.pairs)))
        n, m = min(int(self._n[k]), max_size), min(int(self._m[k]), max_size)
        if rng.uniform() < 0.5:
            n, m = int(rng.integers(1, n + 1)), int(rng.integers(1, m + 1))
        return n, m

    def make_batch(self, seed: int, rank: int, index: int, cfg: DHNDataConfig, max_size: int) -> DHNBatch:
        """Batch ``index`` of this pool's stream for ``(seed, rank)``: a pure function of them."""
        rng = np.random.default_rng([seed, rank, index, 17])
        if rng.uniform() < 0.5:
            n, m = self.shape(rng, max_size)
        else:  # the random stream's shape distribution (sizes the data rarely has), m capped
            n, m = _draw_shape(rng, cfg, max_size)
            m = min(m, int(self._gm.max()))
        b = int(np.clip(cfg.elements_per_batch // (n * m), 1, cfg.max_batch))
        samples = [self.draw(rng, n, m, cfg) for _ in range(b)]
        return DHNBatch(torch.stack([s.gated for s in samples]), torch.stack([s.target for s in samples]),
                        torch.stack([s.forbidden for s in samples]))

    def heldout(self, seed: int, count: int, iou_threshold: float = 0.5) -> list[DHNSample]:
        """``count`` whole-frame matrices (no subsetting) at ``iou_threshold``: pairs drawn
        without replacement, a third of them jittered GT frames instead (seeded)."""
        rng = np.random.default_rng([seed, 4711])
        n_jit = min(count // 3, len(self.gt_frames))
        pick = rng.choice(len(self.pairs), size=min(count - n_jit, len(self.pairs)), replace=False)
        out = [sample_from_pair(self.pairs[int(k)], iou_threshold) for k in np.sort(pick)]
        for k in np.sort(rng.choice(len(self.gt_frames), size=n_jit, replace=False)):
            g = self.gt_frames[int(k)]
            out.append(sample_from_pair(jittered_pair(rng, g.gt, g.size), iou_threshold))
        return out


def mixed_stream(seed: int, rank: int, start: int, cfg: DHNDataConfig, pool: TrackingPool | None,
                 share: float, max_size_at=None) -> Iterator[DHNBatch]:
    """Endless stream mixing :func:`deepmot.dhn.data.batch_stream` (random matrices) with
    ``pool`` batches: batch ``k`` comes from the pool with probability ``share`` (decided by
    ``(seed, rank, k)``, so the stream resumes exactly). ``share`` 0 or no pool: the random stream."""
    if pool is None or share <= 0:
        yield from batch_stream(seed, rank, start, cfg, max_size_at)
        return
    k = start
    while True:
        size = cfg.max_size if max_size_at is None else max_size_at(k)
        if np.random.default_rng([seed, rank, k, 23]).uniform() < share:
            yield pool.make_batch(seed, rank, k, cfg, min(size, cfg.max_size))
        else:
            yield make_batch(seed, rank, k, cfg, size)
        k += 1


def dataset_root(root: str | Path | None, seed: int = 0) -> Path:
    """``root``, or the built-in synthetic set of generator ``seed`` (generated once: seed 0 in
    ``data/synthetic``, any other seed in ``data/synthetic-seed<seed>/synthetic``)."""
    if root:
        return Path(root)
    from deepmot.datasets.synthetic import SyntheticConfig, resolve_data_root
    data_dir = "data" if seed == 0 else f"data/synthetic-seed{seed}"
    return resolve_data_root(data_dir=data_dir, config=SyntheticConfig(seed=seed), log=lambda _: None)
