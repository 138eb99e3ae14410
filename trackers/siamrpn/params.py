"""Tracking hyper-parameters of a SiamRPN tracker (PySOT ``cfg.TRACK`` + ``cfg.ANCHOR``, spec §1, §3).

One frozen dataclass, :class:`TrackParams`, read by the batched tracker and by the per-target
post-processing. Its defaults are those of :class:`~trackers.siamrpn.config.SiamRPNConfig`
(PySOT's), so PySOT's values live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trackers.siamrpn.anchors import Flavour, score_size
from trackers.siamrpn.config import SiamRPNConfig

__all__ = ["TrackParams", "LOST_WINDOW_INFLUENCE"]

_PYSOT = SiamRPNConfig()  # one source of the default tracking/anchor values

#: window influence of PySOT's long-term tracker while a target is lost (hard-coded there, §3.8)
LOST_WINDOW_INFLUENCE = 0.001


@dataclass(frozen=True)
class TrackParams:
    """Tracking hyper-parameters; sizes in crop pixels.

    ``long_term`` selects PySOT's ``SiamRPNLTTracker`` procedure (spec §3.8): a target whose best
    score falls below ``confidence_low`` is *lost* (its box is kept, its next search crop is
    ``lost_instance_size`` wide and its window influence :data:`LOST_WINDOW_INFLUENCE`) until a
    best score above ``confidence_high``.
    """

    exemplar_size: int = _PYSOT.exemplar_size
    instance_size: int = _PYSOT.instance_size
    base_size: int = _PYSOT.base_size
    context_amount: float = _PYSOT.context_amount
    penalty_k: float = _PYSOT.penalty_k
    window_influence: float = _PYSOT.window_influence
    lr: float = _PYSOT.lr
    stride: int = _PYSOT.anchor_stride
    ratios: tuple[float, ...] = tuple(_PYSOT.anchor_ratios)
    scales: tuple[float, ...] = tuple(_PYSOT.anchor_scales)
    flavour: Flavour = _PYSOT.flavour
    min_size: float = 10.0  # clipping floor for width/height (pixels), PySOT's _bbox_clip
    long_term: bool = False
    lost_instance_size: int = _PYSOT.lost_instance_size
    confidence_low: float = _PYSOT.confidence_low
    confidence_high: float = _PYSOT.confidence_high

    def score_size_for(self, instance_size: int) -> int:
        """Side S of the score map for a search crop of ``instance_size`` pixels."""
        return score_size(instance_size, self.exemplar_size, self.stride, self.base_size)

    @property
    def score_size(self) -> int:
        """Side S of the score map for ``instance_size`` (the normal, not-lost mode)."""
        return self.score_size_for(self.instance_size)

    @property
    def anchor_num(self) -> int:
        """Anchors per cell, A."""
        return len(self.ratios) * len(self.scales)

    def mode(self, lost: bool) -> tuple[int, float]:
        """``(instance_size, window_influence)`` of a target in the normal or the lost state."""
        if lost:
            return self.lost_instance_size, LOST_WINDOW_INFLUENCE
        return self.instance_size, self.window_influence

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "TrackParams":
        """Parameters of a :class:`~trackers.siamrpn.config.SiamRPNConfig` (``None``: PySOT defaults),
        with keyword overrides (e.g. ``flavour="dasiamrpn"``). ``cfg.tracker ==
        "SiamRPNLTTracker"`` selects the long-term procedure."""
        values: dict[str, Any] = {}
        if cfg is not None:
            values = dict(exemplar_size=cfg.exemplar_size, instance_size=cfg.instance_size,
                          base_size=cfg.base_size, context_amount=cfg.context_amount,
                          penalty_k=cfg.penalty_k, window_influence=cfg.window_influence, lr=cfg.lr,
                          stride=cfg.anchor_stride, ratios=tuple(float(r) for r in cfg.anchor_ratios),
                          scales=tuple(float(r) for r in cfg.anchor_scales),
                          flavour=getattr(cfg, "flavour", "pysot"),
                          long_term=getattr(cfg, "tracker", "SiamRPNTracker") == "SiamRPNLTTracker",
                          lost_instance_size=getattr(cfg, "lost_instance_size", _PYSOT.lost_instance_size),
                          confidence_low=getattr(cfg, "confidence_low", _PYSOT.confidence_low),
                          confidence_high=getattr(cfg, "confidence_high", _PYSOT.confidence_high))
        values.update(overrides)
        return cls(**values)
