"""DeepMOT-Tracktor's appearance branch: the DeepMOT criterion on appearance distances.

DeepMOT-Tracktor (Xu et al., "How To Train Your Deep Multi-Object Tracker", CVPR 2020) trains an
appearance head ``g`` (a Linear on the box head's representation, 128 outputs) with the criterion
applied to the appearance distance between N tracks and the M GT objects of the frame::

    D_app[n, m] = 0.5 * (1 - cos(mean_k g(f_{n,k}), g(f_m)))

where ``f_{n,k}`` are the stored box-head representations of track n (its last ``max_features``,
detached) and ``f_m`` the representation of GT box m on the current frame (detached): the gradient
reaches ``g`` only. The per-frame loss is::

    5 * MOTP_app + (FN~_app + FP~_app + 2 * IDS~_app) / M

with the criterion's soft assignment (DHN or Sinkhorn) of ``D_app``, no IoU gate, and its
``delta`` / temperature (:func:`deepmot.criterion.soft_counts`). MOTP_app is the mean of ``D_app``
over the pairs (track, the GT object it follows); IDS~_app sums, for each GT object whose own track
is present, the column mass of every other track (:func:`deepmot.criterion.soft_id_switches`).

Against the reference code, two simplifications: its bookkeeping takes the decisions (missed
objects, the argmax track, the MOTP mask) from the geometric column softmax and keeps a memory that
is in effect "birth GT id -> track"; here the "own" pairs are the GT each track follows (its birth
GT), so a GT object without an own track adds no switch and no MOTP pair (the reference counts its
whole column when the geometric branch calls it missed, and gives a new object an MOTP pair at its
argmax track).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmot.criterion import soft_counts, soft_id_switches

__all__ = ["W_MOTP_APP", "W_IDS_APP", "mean_embedding", "appearance_distance", "own_pairs", "appearance_loss",
           "new_head"]

#: DeepMOT-Tracktor's weights inside the appearance loss (MOTP and soft ID switches)
W_MOTP_APP = 5.0
W_IDS_APP = 2.0


def mean_embedding(head: Callable[[Tensor], Tensor], bank: Tensor, count: Tensor) -> Tensor:
    """``(N, D)``: per track, the mean of ``head`` over its stored representations: ``bank (N, K,
    R)`` holds them in its first ``min(count[n], K)`` slots (a ring), ``count (N,)`` how many were
    ever written (a track without any gets zeros)."""
    n, k, r = bank.shape
    emb = head(bank.reshape(n * k, r))
    emb = emb.reshape(n, k, emb.shape[-1])
    valid = (torch.arange(k, device=bank.device)[None] < count.to(bank.device)[:, None]).to(emb.dtype)
    return (emb * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)


def appearance_distance(track_emb: Tensor, gt_emb: Tensor) -> Tensor:
    """``(N, M)``: ``0.5 * (1 - cos)`` between ``track_emb (N, D)`` and ``gt_emb (M, D)``."""
    a = F.normalize(track_emb, dim=-1, eps=1e-8)
    b = F.normalize(gt_emb, dim=-1, eps=1e-8)
    return 0.5 * (1.0 - a @ b.T)


def own_pairs(target: Tensor, present: Tensor, gt_boxes: Tensor) -> Tensor:
    """``(N, M)`` bool: the GT column each track follows, from the loop's per-row ``target (N, 4)``
    (the box of the GT object the track follows, a row of ``gt_boxes`` when ``present (N,)``) and
    the frame's ``gt_boxes (M, 4)``: the first column whose box equals the target exactly."""
    n, m = len(target), len(gt_boxes)
    if n == 0 or m == 0:
        return torch.zeros(n, m, dtype=torch.bool, device=gt_boxes.device)
    same = (target.to(gt_boxes)[:, None, :] == gt_boxes[None]).all(-1) & present.to(gt_boxes.device)[:, None]
    first = same.to(torch.int8).argmax(1, keepdim=True)
    return same & (torch.arange(m, device=gt_boxes.device)[None] == first)


def appearance_loss(track_emb: Tensor, gt_emb: Tensor, own: Tensor, assign: Callable[[Tensor], Tensor],
                    delta: float, temperature: float, w_motp: float = W_MOTP_APP,
                    w_ids: float = W_IDS_APP) -> Tensor:
    """``w_motp * MOTP_app + (FN~_app + FP~_app + w_ids * IDS~_app) / M`` (0-d) for ``track_emb (N,
    D)``, ``gt_emb (M, D)`` and ``own (N, M)`` bool (:func:`own_pairs`); ``assign``: the soft
    assignment of an ``(N, M)`` cost (the loop criterion's ``assign``). Without tracks or GT it is
    a zero attached to both inputs."""
    n, m = own.shape
    zero = (track_emb.sum() + gt_emb.sum()) * 0.0
    if n == 0 or m == 0:
        return zero
    dist = appearance_distance(track_emb, gt_emb)
    fp, fn, s, missed = soft_counts(assign(dist), delta, temperature)
    own = own.to(dist.device)
    ids = soft_id_switches(s, own, own.any(dim=0), missed)
    pairs = int(own.sum())
    motp = (dist * own.to(dist.dtype)).sum() / pairs if pairs else zero
    return w_motp * motp + (fp + fn + w_ids * ids) / m + zero


def new_head(rep_dim: int, dim: int, seed: int) -> nn.Linear:
    """A fresh appearance head (PyTorch's default init, as the reference's new layer), drawn from
    ``seed`` alone: the same start whatever the global RNG state (resume, the ``shipped`` row)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(rep_dim, dim)
