"""Random distance matrices with exact targets: the data the DHN is pre-trained on.

Most matrices are *scenes*: GT boxes in an image (sometimes crowded), track boxes that are
jittered copies of GT (some objects missed), duplicated tracks, and clutter near real objects
or anywhere. The matrix is the DeepMOT distance (:func:`deepmot.boxes.deepmot_distance`),
rows = tracks, columns = GT. A share are plain uniform matrices. Each matrix is gated with an
IoU threshold drawn per matrix (or not gated): forbidden pairs enter the DHN as ``d + 1.0``
(:func:`deepmot.boxes.gate_distance`), the convention the criterion uses too. The target is
the gated Hungarian matching (:func:`deepmot.matching.linear.gated_linear_assignment`):
maximum cardinality over allowed pairs, then minimum cost -- what CLEAR-MOT counts.

Batches hold matrices of one shape (bucketing, no padding). Batch ``k`` of rank ``r`` is a pure
function of ``(seed, r, k)``, so the stream is endless, reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from deepmot.boxes import box_iou, cxcywh_to_xyxy, deepmot_distance, forbidden_mask, gate_distance
from deepmot.config import Fraction, NonNegative, PositiveInt
from deepmot.matching.linear import gated_linear_assignment

__all__ = ["DHNDataConfig", "DHNBatch", "DHNSample", "generate_matrix", "make_batch",
           "batch_stream", "heldout_set", "SIZE_BUCKETS", "size_bucket", "exact_sample", "hypotheses"]

#: Size buckets on ``max(N, M)`` used for sampling and for reporting: (low, high) inclusive.
SIZE_BUCKETS: tuple[tuple[int, int], ...] = ((1, 5), (6, 10), (11, 20), (21, 30))

_OTHER_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8)


def size_bucket(n: int, m: int) -> str:
    """Name of the size bucket of an ``(n, m)`` matrix, by ``max(n, m)``: ``"<=5"``, ``"6-10"``..."""
    s = max(n, m)
    for lo, hi in SIZE_BUCKETS:
        if s <= hi:
            return f"<={hi}" if lo == 1 else f"{lo}-{hi}"
    return f">{SIZE_BUCKETS[-1][1]}"


@dataclasses.dataclass
class DHNDataConfig:
    """How random matrices are drawn.

    ``max_size``: largest N and M. ``bucket_probs``: probability of each size bucket of
    :data:`SIZE_BUCKETS` (buckets above ``max_size`` are dropped). ``elements_per_batch``:
    a batch holds about this many matrix entries (``B * N * M``), between 1 and ``max_batch``
    matrices. ``uniform_share``: share of plain uniform matrices. ``ungated_share``: share of
    matrices without gating. ``threshold_05_share``: share of gated matrices using IoU 0.5
    (the criterion's default); the others draw from 0.1..0.8.
    """

    max_size: PositiveInt = 30
    bucket_probs: tuple[NonNegative, ...] = (0.3, 0.3, 0.25, 0.15)
    elements_per_batch: PositiveInt = 4096
    max_batch: PositiveInt = 128
    uniform_share: Fraction = 0.1
    ungated_share: Fraction = 0.2
    threshold_05_share: Fraction = 0.5

    def __post_init__(self) -> None:
        if not any(p > 0 for p in self.bucket_probs):
            raise ValueError(f"bucket_probs must hold at least one positive value, got {self.bucket_probs}")


class DHNSample(NamedTuple):
    """One matrix: ``distance`` (N, M) in [0, 1), ``forbidden`` (N, M) bool, ``target`` (N, M) 0/1."""

    distance: Tensor
    forbidden: Tensor
    target: Tensor

    @property
    def gated(self) -> Tensor:
        """The DHN's input: ``distance + 1.0`` on forbidden pairs."""
        return gate_distance(self.distance, self.forbidden)


class DHNBatch(NamedTuple):
    """Same-shape matrices: ``input`` (B, N, M) gated distances, ``target`` (B, N, M) float 0/1,
    ``forbidden`` (B, N, M) bool."""

    input: Tensor
    target: Tensor
    forbidden: Tensor


# ---------------------------------------------------------------------------- generation
def _random_boxes(rng: np.random.Generator, k: int, img_w: float, img_h: float,
                  region: tuple[float, float, float, float]) -> np.ndarray:
    """``k`` pedestrian-like boxes (cx, cy, w, h) with centres in ``region`` (x0, y0, x1, y1)."""
    h = img_h * np.exp(rng.uniform(np.log(0.05), np.log(0.5), k))
    w = h * rng.uniform(0.3, 0.7, k)
    cx = rng.uniform(region[0], region[2], k)
    cy = rng.uniform(region[1], region[3], k)
    return np.stack([cx, cy, w, h], axis=1)


def _jitter(rng: np.random.Generator, boxes: np.ndarray, sigma: float) -> np.ndarray:
    """Perturb (cx, cy, w, h) boxes: centre shift ~ sigma * size, log-scale change ~ sigma."""
    k = len(boxes)
    out = boxes.copy()
    out[:, 0] += sigma * boxes[:, 2] * rng.standard_normal(k)
    out[:, 1] += sigma * boxes[:, 3] * rng.standard_normal(k)
    out[:, 2:] *= np.exp(sigma * rng.standard_normal((k, 2)))
    return out


def _scene_distance(rng: np.random.Generator, n: int, m: int) -> tuple[Tensor, Tensor]:
    """A random scene of ``n`` tracks and ``m`` GT -> (DeepMOT distance, IoU), both (n, m)."""
    img_w = float(rng.choice([640.0, 1280.0, 1920.0]))
    img_h = img_w * float(rng.choice([0.5625, 0.75]))
    # crowd: all GT centres inside a sub-region covering a random share of the image
    frac = rng.uniform(0.1, 1.0)
    rw, rh = frac * img_w, frac * img_h
    x0, y0 = rng.uniform(0, img_w - rw), rng.uniform(0, img_h - rh)
    region = (x0, y0, x0 + rw, y0 + rh)
    gt = _random_boxes(rng, m, img_w, img_h, region)
    tb, gb = cxcywh_to_xyxy(torch.from_numpy(hypotheses(rng, gt, n, img_w, img_h))), cxcywh_to_xyxy(torch.from_numpy(gt))
    return deepmot_distance(tb, gb, (img_w, img_h)), box_iou(tb, gb)


def hypotheses(rng: np.random.Generator, gt: np.ndarray, n: int, img_w: float, img_h: float) -> np.ndarray:
    """``n`` track boxes for ``(M, 4)`` GT boxes, both ``cx, cy, w, h`` pixels -> ``(n, 4)``.

    Jittered copies of a random subset of the GT (log-uniform jitter 0.02-0.4 of the box size;
    up to 40 % of the objects missed), the other rows duplicates, near misses or boxes anywhere
    in the ``img_w x img_h`` image, in random order. Used for the random scenes and for
    jittering real GT (:mod:`deepmot.dhn.tracking_data`).
    """
    m = len(gt)
    sigma = float(np.exp(rng.uniform(np.log(0.02), np.log(0.4))))
    n_true = min(n, m) - rng.binomial(min(n, m), rng.uniform(0.0, 0.4))
    objs = rng.permutation(m)[:n_true]
    parts = [_jitter(rng, gt[objs], sigma)]
    n_extra = n - n_true
    if n_extra > 0:
        kind = rng.uniform(size=n_extra)
        p_dup, p_near = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
        src = gt[rng.integers(0, m, n_extra)]
        dup = _jitter(rng, src, max(sigma, 0.05) * 1.5)
        near = src.copy()
        ang = rng.uniform(0, 2 * np.pi, n_extra)
        dist = rng.uniform(0.3, 1.5, n_extra)
        near[:, 0] += np.cos(ang) * dist * src[:, 2]
        near[:, 1] += np.sin(ang) * dist * src[:, 3]
        near = _jitter(rng, near, 0.1)
        anywhere = _random_boxes(rng, n_extra, img_w, img_h, (0, 0, img_w, img_h))
        extra = np.where((kind < p_dup)[:, None], dup,
                         np.where((kind < p_dup + p_near)[:, None], near, anywhere))
        parts.append(extra)
    tracks = np.concatenate(parts)[rng.permutation(n)]
    tracks[:, 2:] = np.maximum(tracks[:, 2:], 2.0)
    return tracks


def _draw_threshold(rng: np.random.Generator, cfg: DHNDataConfig, allow_ungated: bool) -> float | None:
    if allow_ungated and rng.uniform() < cfg.ungated_share:
        return None
    if rng.uniform() < cfg.threshold_05_share:
        return 0.5
    return float(rng.choice(_OTHER_THRESHOLDS))


def generate_matrix(rng: np.random.Generator, n: int, m: int, cfg: DHNDataConfig | None = None,
                    allow_ungated: bool = True) -> DHNSample:
    """One random ``(n, m)`` matrix with its forbidden mask and exact gated-Hungarian target."""
    cfg = cfg or DHNDataConfig()
    threshold = _draw_threshold(rng, cfg, allow_ungated)
    if rng.uniform() < cfg.uniform_share:
        d = torch.from_numpy(rng.uniform(0.0, 1.0, (n, m)) ** rng.uniform(0.5, 2.0))
        # uniform matrices have no boxes: gate on the distance, at a level matched to the IoU rule
        forb = torch.zeros(n, m, dtype=torch.bool) if threshold is None else d > (1.0 - 0.5 * threshold)
    else:
        d, iou = _scene_distance(rng, n, m)
        forb = forbidden_mask(iou, threshold)
    return exact_sample(d, forb)


def exact_sample(distance: Tensor, forbidden: Tensor) -> DHNSample:
    """A :class:`DHNSample` of an ``(N, M)`` distance and forbidden mask, with its exact target
    (gated Hungarian: maximum cardinality over allowed pairs, then minimum total distance)."""
    n, m = distance.shape
    target = torch.zeros(n, m)
    rows, cols = gated_linear_assignment(distance.detach().double().numpy(), forbidden.numpy())
    target[torch.from_numpy(rows), torch.from_numpy(cols)] = 1.0
    return DHNSample(distance.detach().float(), forbidden, target)


def _draw_shape(rng: np.random.Generator, cfg: DHNDataConfig, max_size: int) -> tuple[int, int]:
    buckets = [(lo, min(hi, max_size)) for lo, hi in SIZE_BUCKETS if lo <= max_size]
    probs = np.asarray(cfg.bucket_probs[:len(buckets)], dtype=float)
    if probs.sum() <= 0:
        probs = np.ones(len(buckets))
    lo, hi = buckets[rng.choice(len(buckets), p=probs / probs.sum())]
    while True:
        n, m = (int(v) for v in rng.integers(1, hi + 1, 2))
        if max(n, m) >= lo:
            return n, m


def make_batch(seed: int, rank: int, index: int, cfg: DHNDataConfig | None = None,
               max_size: int | None = None) -> DHNBatch:
    """Batch ``index`` of the stream of ``(seed, rank)``: same-shape matrices, sizes <= ``max_size``."""
    cfg = cfg or DHNDataConfig()
    rng = np.random.default_rng([seed, rank, index])
    n, m = _draw_shape(rng, cfg, min(max_size or cfg.max_size, cfg.max_size))
    b = int(np.clip(cfg.elements_per_batch // (n * m), 1, cfg.max_batch))
    samples = [generate_matrix(rng, n, m, cfg) for _ in range(b)]
    return DHNBatch(torch.stack([s.gated for s in samples]),
                    torch.stack([s.target for s in samples]),
                    torch.stack([s.forbidden for s in samples]))


def batch_stream(seed: int, rank: int = 0, start: int = 0, cfg: DHNDataConfig | None = None,
                 max_size_at=None) -> Iterator[DHNBatch]:
    """Endless stream of batches ``start, start + 1, ...`` (see :func:`make_batch`).

    ``max_size_at``: optional ``index -> max size`` callable (a curriculum).
    """
    k = start
    while True:
        yield make_batch(seed, rank, k, cfg, None if max_size_at is None else max_size_at(k))
        k += 1


def heldout_set(seed: int = 20240, count: int = 2000, max_size: int = 30,
                cfg: DHNDataConfig | None = None, gated_only: bool = True) -> list[DHNSample]:
    """A fixed evaluation set: ``count`` matrices spread evenly over the size buckets <= max_size.

    ``gated_only``: every matrix gated by an IoU threshold (none of the un-gated share).
    """
    cfg = cfg or DHNDataConfig()
    rng = np.random.default_rng([seed, 999_983])
    buckets = [(lo, min(hi, max_size)) for lo, hi in SIZE_BUCKETS if lo <= max_size]
    out = []
    for i in range(count):
        lo, hi = buckets[i % len(buckets)]
        while True:
            n, m = (int(v) for v in rng.integers(1, hi + 1, 2))
            if max(n, m) >= lo:
                break
        out.append(generate_matrix(rng, n, m, cfg, allow_ungated=not gated_only))
    return out
