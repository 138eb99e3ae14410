"""Training clips for DeepMOT fine-tuning: cutting sequences into clips, the per-epoch order,
sharding over ranks, the per-frame training GT, and :class:`ClipTracks`, the tracks of one clip
with their GT-driven births, deaths and refreshes.

A *clip* is ``seq_len`` consecutive frames of one training sequence. Clips are cut once
(consecutive, non-overlapping; the last one of a sequence may be shorter) and shuffled every
epoch by a permutation that depends only on ``(seed, epoch)``, so a resumed run and every rank
of a distributed run see the same order without sharing RNG state. Each clip also gets its own
``torch.Generator`` seeded from ``(seed, epoch, clip position)``: the augmentations of a clip are
the same whichever rank (or single process) runs it. The tracker applies them (for SiamRPN:
``trackers/siamrpn/augment.py``); the loop only hands the generator on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepmot.criterion import IdentityMemory
from deepmot.engine.protocol import StepOutput, TrainTracks

__all__ = ["Clip", "ClipTracks", "cut_clips", "expected_steps", "epoch_order", "shard", "clip_generator",
           "frame_gt"]


@dataclass(frozen=True)
class Clip:
    """Frames ``start..end`` (1-based, inclusive) of training sequence number ``seq``."""

    seq: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start + 1

    @property
    def frames(self) -> range:
        """1-based frame numbers of the clip, in order."""
        return range(self.start, self.end + 1)


def cut_clips(ranges: list[tuple[int, int]], seq_len: int, min_len: int = 2) -> list[Clip]:
    """Consecutive clips of ``seq_len`` frames over each sequence's inclusive 1-based frame
    ``ranges[i] = (start, end)``; a tail shorter than ``min_len`` frames is dropped (nothing to
    train on: the first frame of a clip only gives births)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    clips = []
    for i, (start, end) in enumerate(ranges):
        for s in range(start, end + 1, seq_len):
            e = min(s + seq_len - 1, end)
            if e - s + 1 >= min(min_len, seq_len):
                clips.append(Clip(i, s, e))
    return clips


def expected_steps(clips: list[Clip], epochs: int, clips_per_step: int, num_repeats: int,
                   max_steps: int | None = None) -> int:
    """Optimiser steps a fine-tuning run will take (``max_steps``, or an estimate from the epochs,
    clips and repeats: frames without GT or tracks take none); for the progress ETA."""
    frames = sum(len(c) - 1 for c in clips) / clips_per_step
    est = math.ceil(epochs * frames * num_repeats)
    return min(est, max_steps) if max_steps is not None else est


def epoch_order(num_clips: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Clip order of ``epoch``: a permutation of ``range(num_clips)`` fixed by ``(seed, epoch)``."""
    if not shuffle:
        return list(range(num_clips))
    return np.random.default_rng([seed, epoch, 7]).permutation(num_clips).tolist()


def shard(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s share of ``items`` (every ``world``-th item from ``rank``)."""
    return items[rank::world]


def clip_generator(seed: int, epoch: int, position: int) -> torch.Generator:
    """The augmentation RNG of the clip at ``position`` in the epoch order (rank-independent)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, position, 11])
                                             .generate_state(1)[0]))


def frame_gt(frame, min_vis: float = 0.0) -> tuple[Tensor, Tensor]:
    """Training GT of a :class:`~deepmot.datasets.Frame`: ``(ids (M,) int64, boxes (M, 4)
    float32)`` of the scored pedestrians with visibility >= ``min_vis``, boxes moved from the
    file's 1-based origin to the trackers' 0-based pixel coordinates (xyxy)."""
    keep = frame.scored_gt_mask(min_vis)
    return frame.gt_ids[keep], frame.gt_boxes[keep] - 1.0


class ClipTracks:
    """The tracks of one training clip and their GT-driven life cycle.

    ``tracks``: the tracker's :class:`~deepmot.engine.protocol.TrainTracks` for this clip;
    ``gen``: the clip's augmentation RNG (handed to the tracker). Holds the criterion's
    :class:`IdentityMemory` and ``gt_of`` (track id -> GT id it follows, for the tracker's
    auxiliary loss). ``pos``: 0-based position of the current frame in the clip.

    ``coast``: a track that matches no GT lives on for up to this many consecutive frames (as an
    inference tracker keeps writing a lost track for a few frames), still following its GT object
    for the auxiliary loss, and its object gets no second track meanwhile; 0 ends it at once (the
    reference loop).
    """

    def __init__(self, clip: Clip, seq: Any, tracks: TrainTracks, gen: torch.Generator, coast: int = 0):
        self.clip, self.seq, self.tracks, self.gen = clip, seq, tracks, gen
        self.coast = coast
        self.misses: dict[int, int] = {}        # track id -> consecutive frames without a match
        self.memory = IdentityMemory()
        self.gt_of: dict[int, int] = {}
        self.pos = 0
        self.frame_data: tuple | None = None    # (image, gt ids, gt boxes) of the current frame
        self.result: tuple | None = None        # (step output, criterion output)

    @property
    def done(self) -> bool:
        """True once every frame of the clip has been used."""
        return self.pos >= len(self.clip)

    def load_frame(self, min_vis: float) -> tuple[np.ndarray, Tensor, Tensor]:
        """Read the current frame: ``(image BGR uint8, gt ids (M,), gt boxes (M, 4) 0-based xyxy)``."""
        fr = self.seq.frame(self.clip.start + self.pos)
        gids, gboxes = frame_gt(fr, min_vis)
        self.frame_data = (fr.image, gids, gboxes)
        return self.frame_data

    def end_all(self) -> None:
        """Every track ends (a frame without GT); the identity memory is kept."""
        if len(self.tracks):
            self.tracks.remove(self.tracks.ids)
        self.gt_of.clear()
        self.misses.clear()

    def births(self, image: np.ndarray, gids: Tensor, gboxes: Tensor) -> list[int]:
        """Start one track per GT object ``gids (K,)`` at ``gboxes (K, 4)`` (0-based xyxy); the
        memory maps each object to its new track."""
        if gids.numel() == 0:
            return []
        new = self.tracks.add(image, gboxes, self.gen)
        self.gt_of.update(zip(new, gids.tolist()))
        self.memory = self.memory.update(gids, torch.tensor(new, dtype=torch.int64))
        return new

    def targets(self, out: StepOutput) -> tuple[Tensor, Tensor]:
        """For each row of ``out``: the current-frame box ``(N, 4)`` of the GT object the track
        follows (row 0's box when it is absent) and ``present (N,)`` bool."""
        _, gids, gboxes = self.frame_data
        row = {g: i for i, g in enumerate(gids.tolist())}
        idx = [row.get(self.gt_of.get(t, -1), -1) for t in out.ids]
        present = torch.tensor([i >= 0 for i in idx], dtype=torch.bool)
        return gboxes[torch.tensor([max(i, 0) for i in idx], dtype=torch.long)], present

    def after_frame(self, refresh: bool) -> None:
        """After the last repeat on this frame: move the tracks on to that repeat's output, take
        the criterion's new memory, restart matched tracks from their matched GT when ``refresh``,
        end unmatched tracks (after ``coast`` missed frames), start tracks for unmatched GT that
        no coasting track follows."""
        out, res = self.result
        image, gids, gboxes = self.frame_data
        self.tracks.advance(out)
        self.memory = res.memory
        tp = res.tp_mask.cpu()
        ids = list(out.ids)
        rows, cols = tp.nonzero(as_tuple=True)
        if refresh and rows.numel():
            refreshed = [ids[int(r)] for r in rows]
            self.tracks.reinit(image, refreshed, gboxes[cols], self.gen)
            self.gt_of.update(zip(refreshed, gids[cols].tolist()))
        matched = tp.any(dim=1).tolist()
        for t, m in zip(ids, matched):
            self.misses[t] = 0 if m else self.misses.get(t, 0) + 1
        dead = [t for t in ids if self.misses[t] > self.coast]
        if dead:
            self.tracks.remove(dead)
            for t in dead:
                self.gt_of.pop(t, None)
                self.misses.pop(t, None)
        followed = {self.gt_of[t] for t in ids if self.misses.get(t, 0) > 0 and t in self.gt_of}
        unmatched = ~tp.any(dim=0) & torch.tensor([g not in followed for g in gids.tolist()], dtype=torch.bool)
        self.births(image, gids[unmatched], gboxes[unmatched])
