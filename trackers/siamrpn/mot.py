"""SiamRPN in the inference protocol: :class:`SiamRPNSOT` (the batched SiamRPN as a
:class:`trackers.multi.BatchedSOT` in MOTChallenge coordinates) and :func:`siamrpn_mot_factory`,
the per-sequence :class:`trackers.multi.MultiTracker` factory over a SiamRPN network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from deepmot.engine.protocol import SequenceFactory
from deepmot.runtime.device import resolve_device
from trackers.multi import mot_factory
from trackers.multi_config import InferenceFileConfig, MOTConfig
from trackers.siamrpn.tracker import BatchedSiamRPNTracker

__all__ = ["SiamRPNSOT", "siamrpn_mot_factory", "build_inference"]


@dataclass
class _Out:
    ids: list[int]
    bbox: Tensor
    best_score: Tensor


class SiamRPNSOT:
    """``BatchedSiamRPNTracker`` as a :class:`BatchedSOT` in MOTChallenge coordinates.

    MOTChallenge boxes are 1-based (pixel column 0 is ``x = 1``); the SiamRPN crops 0-based image
    arrays, so boxes are shifted by ``origin`` on the way in and back on the way out. ``move`` sets
    the targets' centre/size (keeping template and features).
    """

    def __init__(self, batched: Any, origin: float = 1.0):
        self.batched = batched
        self.shift = torch.tensor([origin, origin, 0.0, 0.0], dtype=torch.float64)

    def _in(self, boxes_xywh: Tensor) -> Tensor:
        return torch.as_tensor(boxes_xywh, dtype=torch.float64).reshape(-1, 4) - self.shift

    def add(self, img: np.ndarray, boxes_xywh: Tensor, ids: Sequence[int]) -> list[int]:
        """Start targets ``ids`` from ``(K, 4)`` boxes."""
        return self.batched.add(img, self._in(boxes_xywh), list(ids))

    def remove(self, ids: Sequence[int]) -> None:
        """Drop targets."""
        self.batched.remove(list(ids))

    def reinit(self, img: np.ndarray, ids: Sequence[int], boxes_xywh: Tensor) -> None:
        """New template and position for existing targets."""
        self.batched.reinit(img, list(ids), self._in(boxes_xywh))

    def move(self, ids: Sequence[int], boxes_xywh: Tensor) -> None:
        """Set the position and size of existing targets (template unchanged)."""
        s = self.batched.state
        row = {i: r for r, i in enumerate(s.ids)}
        rows = torch.tensor([row[int(i)] for i in ids], dtype=torch.long)
        b = self._in(boxes_xywh)
        s.center[rows] = (b[:, :2] + b[:, 2:] / 2).to(s.center.dtype)
        s.size[rows] = b[:, 2:].to(s.size.dtype)

    def track(self, img: np.ndarray) -> _Out:
        """One batched step for every target: ids, ``(N, 4)`` x, y, w, h, scores."""
        r = self.batched.track(img)
        return _Out(list(r.ids), r.bbox.to(torch.float64) + self.shift, r.best_score)


def siamrpn_mot_factory(model: nn.Module, cfg: MOTConfig | dict | None = None,
                        max_batch: int | None = None) -> SequenceFactory:
    """Per-sequence factory ``f(seq_info) -> MultiTracker`` over ``model`` (a SiamRPN network),
    each sequence with a fresh :class:`BatchedSiamRPNTracker` (``max_batch`` targets per pass)."""
    return mot_factory(lambda: SiamRPNSOT(BatchedSiamRPNTracker(model, max_batch=max_batch)), cfg)


def build_inference(cfg: InferenceFileConfig, checkpoint: str | None) -> SequenceFactory:
    """The ``"siamrpn"`` inference entry: architecture ``cfg.model`` with weights ``checkpoint``
    (loaded strictly) on ``cfg.device``, tracked as ``cfg.mot`` says."""
    from trackers.siamrpn import build_siamrpn_tracker

    model = build_siamrpn_tracker({"model": cfg.model, "checkpoint": checkpoint})
    model = model.to(resolve_device(cfg.device)).eval()
    return siamrpn_mot_factory(model, cfg.mot, max_batch=cfg.max_batch)
