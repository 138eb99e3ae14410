"""The state of a set of tracks as tensors, one row per track (batched by construction).

:class:`TrackSet` holds ids, boxes, scores, a short history of past boxes (for the motion model and
for putting a killed track back where it was), a ring of appearance vectors and the frames each
track has been inactive. Rows are selected, concatenated and updated with index tensors; nothing
loops over tracks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = ["TrackSet"]


@dataclass
class TrackSet:
    """N tracks: ``ids (N,)`` int64; ``pos (N, 4)`` boxes x1, y1, x2, y2 (pixels); ``score (N,)``;
    ``hist (N, H, 4)`` the last H boxes, oldest first, of which the last ``nhist (N,)`` are valid;
    ``feats (N, F, D)`` a ring of appearance vectors of which ``nfeat (N,)`` were written (slot
    ``nfeat % F`` next); ``idle (N,)`` frames spent inactive."""

    ids: Tensor
    pos: Tensor
    score: Tensor
    hist: Tensor
    nhist: Tensor
    feats: Tensor
    nfeat: Tensor
    idle: Tensor

    @staticmethod
    def empty(history: int, max_features: int, dim: int, device: torch.device | str = "cpu") -> "TrackSet":
        """No tracks; ``history`` boxes and ``max_features`` vectors of size ``dim`` per track."""
        f = dict(dtype=torch.float32, device=device)
        i = dict(dtype=torch.int64, device=device)
        return TrackSet(torch.zeros(0, **i), torch.zeros(0, 4, **f), torch.zeros(0, **f),
                        torch.zeros(0, history, 4, **f), torch.zeros(0, **i),
                        torch.zeros(0, max_features, dim, **f), torch.zeros(0, **i), torch.zeros(0, **i))

    def new(self, ids: Tensor, pos: Tensor, score: Tensor, feats: Tensor | None) -> "TrackSet":
        """Fresh tracks shaped like this set: ``ids (K,)``, ``pos (K, 4)``, ``score (K,)`` and their
        first appearance vectors ``feats (K, D)`` (None: none yet)."""
        k = len(ids)
        t = TrackSet.empty(self.hist.shape[1], self.feats.shape[1], self.feats.shape[2], self.pos.device)
        t.ids = ids.to(t.ids)
        t.pos = pos.to(t.pos).reshape(k, 4)
        t.score = score.to(t.score).reshape(k)
        t.hist = t.hist.new_zeros(k, *t.hist.shape[1:])
        t.nhist = t.nhist.new_zeros(k)
        t.feats = t.feats.new_zeros(k, *t.feats.shape[1:])
        t.nfeat = t.nfeat.new_zeros(k)
        t.idle = t.idle.new_zeros(k)
        if feats is not None:
            t.add_features(torch.arange(k, device=t.ids.device), feats)
        return t

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Tensor) -> "TrackSet":
        """The tracks at ``rows`` (an index or a bool mask)."""
        return TrackSet(*(getattr(self, f.name)[rows] for f in fields(self)))

    def cat(self, other: "TrackSet") -> "TrackSet":
        """These tracks followed by ``other``'s."""
        return TrackSet(*(torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))

    def push_history(self) -> None:
        """Append every track's current box to its history."""
        self.hist = torch.cat([self.hist[:, 1:], self.pos[:, None]], 1)
        self.nhist = (self.nhist + 1).clamp(max=self.hist.shape[1])

    def last_box(self) -> Tensor:
        """``(N, 4)``: the newest box of the history (the current box where there is none)."""
        return torch.where((self.nhist > 0)[:, None], self.hist[:, -1], self.pos)

    def velocity(self) -> Tensor:
        """``(N, 4)``: mean change per frame of each corner over the valid history (0 with < 2 boxes)."""
        h = self.hist.shape[1]
        diffs = self.hist[:, 1:] - self.hist[:, :-1]                           # (N, H-1, 4)
        j = torch.arange(h - 1, device=diffs.device)
        valid = (j[None] >= (h - self.nhist)[:, None]).to(diffs.dtype)         # both ends valid
        n = valid.sum(1, keepdim=True)
        return (diffs * valid[..., None]).sum(1) / n.clamp(min=1)

    def add_features(self, rows: Tensor, feats: Tensor) -> None:
        """Write ``feats (K, D)`` into the rings of ``rows`` (K distinct rows)."""
        if len(rows) == 0:
            return
        slot = self.nfeat[rows] % self.feats.shape[1]
        self.feats[rows, slot] = feats.to(self.feats)
        self.nfeat[rows] += 1

    def mean_features(self) -> Tensor:
        """``(N, D)``: each track's mean stored appearance vector (zeros without any)."""
        n = self.nfeat.clamp(max=self.feats.shape[1]).clamp(min=1).to(self.feats.dtype)
        return self.feats.sum(1) / n[:, None]

    def positive_area(self) -> Tensor:
        """``(N,)`` bool: boxes with width and height > 0."""
        return (self.pos[:, 2] > self.pos[:, 0]) & (self.pos[:, 3] > self.pos[:, 1])
