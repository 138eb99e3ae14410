"""Training clips for DeepMOT fine-tuning: cutting sequences into clips, the per-epoch order,
sharding over ranks, the per-frame training GT, the template/search augmentations, and
:class:`ClipTracks`, the tracks of one clip with their GT-driven births, deaths and refreshes.

A *clip* is ``seq_len`` consecutive frames of one training sequence. Clips are cut once
(consecutive, non-overlapping; the last one of a sequence may be shorter) and shuffled every
epoch by a permutation that depends only on ``(seed, epoch)``, so a resumed run and every rank
of a distributed run see the same order without sharing RNG state. Each clip also gets its own
``torch.Generator`` seeded from ``(seed, epoch, clip position)``: the augmentations of a clip are
the same whichever rank (or single process) runs it.

Augmentations (specs/deepmot.md §6.6, with §8.16's fixes: salt is 255, luminance is a per-pixel
offset in [-25, 24]): box scale jitter of new templates, and luminance / blur / Gaussian noise /
salt-and-pepper on template and search crops (float32 BGR 0..255, NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmot.boxes import xyxy_to_xywh
from deepmot.config import Fraction, Positive
from deepmot.criterion import IdentityMemory

__all__ = ["Clip", "AugmentConfig", "ClipTracks", "cut_clips", "epoch_order", "shard",
           "clip_generator", "frame_gt", "jitter_box_scale", "augment_crops"]


@dataclass
class AugmentConfig:
    """Augmentation of new templates and search crops (DeepMOT v1 values, specs §6.6)."""

    birth_scale_prob: Fraction = 0.4    # box w/h jitter of born tracks' templates
    refresh_scale_prob: Fraction = 0.2  # same, on template refresh
    scale_range: list[Positive] = field(default_factory=lambda: [0.8, 1.2])
    template_photometric_prob: Fraction = 0.2  # luminance / blur / noise, each with this prob.
    search_photometric_prob: Fraction = 0.25

    def __post_init__(self) -> None:
        if len(self.scale_range) != 2 or self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with low <= high, got {self.scale_range}")


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


def jitter_box_scale(xywh: Tensor, prob: float, low: float, high: float,
                     gen: torch.Generator) -> Tensor:
    """With probability ``prob`` per box, scale width and height independently by U[low, high]
    about the centre. ``xywh (K, 4)`` float64 pixels -> same shape (a new tensor)."""
    out = xywh.clone()
    if xywh.shape[0] == 0 or prob <= 0:
        return out
    hit = torch.rand(xywh.shape[0], generator=gen) < prob
    f = low + (high - low) * torch.rand(xywh.shape[0], 2, generator=gen)
    f = torch.where(hit[:, None], f, torch.ones_like(f)).to(xywh.dtype)
    centre = xywh[:, :2] + xywh[:, 2:] / 2
    out[:, 2:] = xywh[:, 2:] * f
    out[:, :2] = centre - out[:, 2:] / 2
    return out


def _blur(x: Tensor, k: int) -> Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` (sigma from the kernel size, as OpenCV does)."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    r = torch.arange(k, dtype=x.dtype) - (k - 1) / 2
    w = torch.exp(-r ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (k // 2,) * 4, mode="replicate"), w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(y, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)[0]


def augment_crops(x: Tensor, prob: float, gen: torch.Generator) -> Tensor:
    """Photometric augmentation of crops ``(N, 3, H, W)`` float32 BGR 0..255 (DeepMOT's noise
    model): independently per crop and each with probability ``prob``: a per-pixel luminance
    offset in [-25, 24], a Gaussian blur (kernel 3 or 5), and either Gaussian noise (variance
    U[10, 30]) or salt-and-pepper (amount 0.004). Returns a new tensor clipped to [0, 255]."""
    if prob <= 0 or x.shape[0] == 0:
        return x
    out = x.detach().clone()
    n, _, h, w = out.shape
    draws = torch.rand(n, 6, generator=gen)
    for i in range(n):
        img = out[i]
        if draws[i, 0] < prob:
            img = img + torch.randint(-25, 25, (1, h, w), generator=gen).to(img.dtype)
        if draws[i, 1] < prob:
            img = _blur(img, 3 if draws[i, 2] < 0.5 else 5)
        if draws[i, 3] < prob:
            if draws[i, 4] < 0.5:
                var = 10 + 20 * float(draws[i, 5])
                img = img + var ** 0.5 * torch.randn(img.shape, generator=gen)
            else:
                u = torch.rand(1, h, w, generator=gen)
                img = torch.where(u < 0.002, torch.zeros_like(img), img)
                img = torch.where(u > 1 - 0.002, torch.full_like(img, 255.0), img)
        out[i] = img.clamp(0, 255)
    return out


class ClipTracks:
    """The tracks of one training clip and their GT-driven life cycle.

    ``tracker``: a batched SOT with ``add(image, xywh) -> ids``, ``remove(ids)``,
    ``reinit(image, ids, xywh)``, ``ids``, ``state.templates`` and ``encode_templates``
    (:class:`trackers.siamrpn.tracker.BatchedSiamRPNTracker`). ``gen``: the clip's augmentation
    RNG. Holds the criterion's :class:`IdentityMemory` and ``gt_of`` (track id -> GT id it
    follows, for the focal labels). ``pos``: 0-based position of the current frame in the clip.
    """

    def __init__(self, clip: Clip, seq: Any, tracker: Any, gen: torch.Generator, augment: AugmentConfig):
        self.clip, self.seq, self.tracker, self.gen, self.augment = clip, seq, tracker, gen, augment
        self.memory = IdentityMemory()
        self.gt_of: dict[int, int] = {}
        self.pos = 0
        self.frame_data: tuple | None = None    # (image, gt ids, gt boxes) of the current frame
        self.result: tuple | None = None        # (train-step output, criterion output)

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
        if len(self.tracker):
            self.tracker.remove(self.tracker.ids)
        self.gt_of.clear()

    def births(self, image: np.ndarray, gids: Tensor, gboxes: Tensor) -> list[int]:
        """Start one track per GT object ``gids (K,)`` at ``gboxes (K, 4)`` (0-based xyxy), with
        box-scale and template augmentation; the memory maps each object to its new track."""
        if gids.numel() == 0:
            return []
        a = self.augment
        xywh = jitter_box_scale(xyxy_to_xywh(gboxes.double()), a.birth_scale_prob, *a.scale_range, self.gen)
        xywh[:, 2:] = xywh[:, 2:].clamp(min=1.0)
        new = self.tracker.add(image, xywh)
        self.gt_of.update(zip(new, gids.tolist()))
        self.memory = self.memory.update(gids, torch.tensor(new, dtype=torch.int64))
        self._augment_templates(new)
        return new

    def _augment_templates(self, ids: list[int]) -> None:
        p = self.augment.template_photometric_prob
        if p <= 0 or not ids:
            return
        s = self.tracker.state
        rows = torch.tensor([s.ids.index(i) for i in ids], dtype=torch.long)
        s.templates[rows] = augment_crops(s.templates[rows].cpu(), p, self.gen).to(s.templates.device)
        with torch.no_grad():
            s.zf = self.tracker.encode_templates(s.templates)

    def after_frame(self, commit: Callable[[Any, Any], None], refresh: bool) -> None:
        """After the last repeat on this frame: move the tracker state on (``commit`` of the last
        step's output), take the criterion's new memory, refresh matched templates from their
        matched GT when ``refresh``, end unmatched tracks, start tracks for unmatched GT."""
        out, res = self.result
        image, gids, gboxes = self.frame_data
        commit(self.tracker, out)
        self.memory = res.memory
        tp = res.tp_mask.cpu()
        ids = list(out.ids)
        rows, cols = tp.nonzero(as_tuple=True)
        if refresh and rows.numel():
            a = self.augment
            xywh = jitter_box_scale(xyxy_to_xywh(gboxes[cols].double()), a.refresh_scale_prob,
                                    *a.scale_range, self.gen)
            xywh[:, 2:] = xywh[:, 2:].clamp(min=1.0)
            refreshed = [ids[int(r)] for r in rows]
            self.tracker.reinit(image, refreshed, xywh)
            self.gt_of.update(zip(refreshed, gids[cols].tolist()))
            self._augment_templates(refreshed)
        dead = [ids[i] for i in range(len(ids)) if not bool(tp[i].any())]
        if dead:
            self.tracker.remove(dead)
            for t in dead:
                self.gt_of.pop(t, None)
        unmatched = ~tp.any(dim=0)
        self.births(image, gids[unmatched], gboxes[unmatched])
