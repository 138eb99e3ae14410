"""Tracking hyper-parameters of a SiamRPN tracker (PySOT ``cfg.TRACK`` + ``cfg.ANCHOR``, spec §1, §3).

One frozen dataclass, :class:`TrackParams`, read by the batched tracker and by the per-target
post-processing. Its fields are *derived* from :class:`~trackers.siamrpn.config.SiamRPNConfig`
(names, types and PySOT's default values; :data:`FROM_CONFIG` maps each to its config field), so
the tracking values are declared once, in the config; only ``min_size`` and ``long_term`` are
its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trackers.siamrpn.anchors import score_size
from trackers.siamrpn.config import SiamRPNConfig

__all__ = ["TrackParams", "FROM_CONFIG", "LOST_WINDOW_INFLUENCE"]

#: window influence of PySOT's long-term tracker while a target is lost (hard-coded there, §3.8)
LOST_WINDOW_INFLUENCE = 0.001

#: TrackParams field -> the SiamRPNConfig field it comes from
FROM_CONFIG = {"exemplar_size": "exemplar_size", "instance_size": "instance_size", "base_size": "base_size",
               "context_amount": "context_amount", "penalty_k": "penalty_k",
               "window_influence": "window_influence", "lr": "lr", "stride": "anchor_stride",
               "ratios": "anchor_ratios", "scales": "anchor_scales", "flavour": "flavour",
               "lost_instance_size": "lost_instance_size", "confidence_low": "confidence_low",
               "confidence_high": "confidence_high"}
_TUPLES = ("ratios", "scales")          # lists in the config, tuples here (hashable, frozen)


def _value(name: str, v: Any) -> Any:
    return tuple(float(x) for x in v) if name in _TUPLES else v


def _derived_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    pysot = SiamRPNConfig()
    types = {f.name: f.type for f in dataclasses.fields(SiamRPNConfig)}
    return [(name, "tuple[float, ...]" if name in _TUPLES else types[src],
             dataclasses.field(default=_value(name, getattr(pysot, src))))
            for name, src in FROM_CONFIG.items()]


class _TrackParamsMethods:
    """What :class:`TrackParams` computes from its fields."""

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
            values = {name: _value(name, getattr(cfg, src)) for name, src in FROM_CONFIG.items()
                      if hasattr(cfg, src)}
            values["long_term"] = getattr(cfg, "tracker", "SiamRPNTracker") == "SiamRPNLTTracker"
        values.update(overrides)
        return cls(**values)


TrackParams = dataclasses.make_dataclass(
    "TrackParams",
    [*_derived_fields(),
     ("min_size", float, dataclasses.field(default=10.0)),   # clipping floor for w/h (pixels), PySOT's _bbox_clip
     ("long_term", bool, dataclasses.field(default=False))],
    bases=(_TrackParamsMethods,), frozen=True, namespace={"__module__": __name__})
TrackParams.__doc__ = """Tracking hyper-parameters; sizes in crop pixels (fields: :data:`FROM_CONFIG`,
with :class:`~trackers.siamrpn.config.SiamRPNConfig`'s defaults, plus ``min_size`` and ``long_term``).

``long_term`` selects PySOT's ``SiamRPNLTTracker`` procedure (spec §3.8): a target whose best
score falls below ``confidence_low`` is *lost* (its box is kept, its next search crop is
``lost_instance_size`` wide and its window influence :data:`LOST_WINDOW_INFLUENCE`) until a
best score above ``confidence_high``.
"""
