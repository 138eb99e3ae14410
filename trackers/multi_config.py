"""Options of the multi-object tracker built over a batched SOT (:mod:`trackers.multi`).

Every threshold of the MOT logic lives here, with MOT17-minded defaults and no per-sequence
tuning. Public-detector specific score thresholds (``DPM`` / ``FRCNN`` / ``SDP``, whose score
scales differ) go in ``detector_scores``; they apply to every sequence of that detector. One
detector's pair can be overridden alone (``--set mot.detector_scores.FRCNN=[0.0,0.6]`` keeps the
other detectors' pairs; :func:`deepmot.config.load_config` merges dotted keys into mappings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from deepmot.config import Device, Fraction, NonNegative, NonNegativeInt, PositiveInt
from trackers.tracktor.config import TracktorConfig

__all__ = ["MOTConfig", "InferenceFileConfig"]


@dataclass
class MOTConfig:
    """Thresholds of :class:`trackers.multi.MultiTracker` (IoU values in [0, 1], boxes in pixels).

    Detections: ``min_score`` drops weaker detections entirely; only detections scoring at
    least ``birth_score`` may start a track. ``detector_scores`` maps a public-detector name to
    ``[min_score, birth_score]`` overriding both for sequences of that detector.

    Association: SOT predictions are matched to detections with
    :func:`deepmot.matching.associate` (``match_method``) at ``IoU >= match_iou``; active tracks
    first, then inactive ones on the remaining detections.

    Refinement: a matched active track whose IoU with its detection is at least ``refine_iou``
    takes the box ``(1 - IoU) * track + IoU * det`` (``refine_iou > 1`` disables it); with ``refine_state`` the SOT's position is
    moved there too. A reactivated track is re-initialised (new template) from its detection when
    ``reinit_on_reactivate``, else only moved.

    Life cycle: a track without a detection goes inactive (not written) and dies once it has
    been unmatched for more than ``patience`` consecutive frames. Active tracks overlapping an
    older active track at ``IoU > nms_iou`` go inactive (duplicate suppression). Tracks whose box
    no longer overlaps the image die. An unmatched confident detection overlapping no active
    track (``IoU < match_iou``) starts a candidate; a candidate detected in ``birth_wait``
    consecutive frames (chained at ``IoU >= birth_iou``) is born, and with ``birth_backfill`` its
    earlier candidate boxes are written too.

    Coasting: an inactive track unmatched for at most ``coast_frames`` frames whose SOT score is at
    least ``coast_score`` is still written (its SOT box), unless it overlaps a written active track
    at ``IoU > nms_iou``. ``coast_frames = 0`` writes matched tracks only (DeepMOT's rule).
    """

    min_score: float = 0.0
    birth_score: float = 0.5
    detector_scores: dict[str, list[float]] = field(default_factory=lambda: {
        "DPM": [0.0, 0.3], "FRCNN": [0.0, 0.5], "SDP": [0.0, 0.5]})
    match_iou: Fraction = 0.3
    match_method: Literal["hungarian", "greedy"] = "hungarian"
    refine_iou: NonNegative = 0.3
    refine_state: bool = True
    reinit_on_reactivate: bool = True
    patience: NonNegativeInt = 30
    nms_iou: Fraction = 0.5
    birth_wait: PositiveInt = 3
    birth_iou: Fraction = 0.4
    birth_backfill: bool = True
    coast_frames: NonNegativeInt = 5
    coast_score: float = 0.5

    def __post_init__(self) -> None:
        for name in ("match_iou", "nms_iou", "birth_iou"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"MOTConfig.{name} must lie in [0, 1], got {v}")
        if self.refine_iou < 0.0:
            raise ValueError(f"MOTConfig.refine_iou must be >= 0 (> 1 disables refinement), got {self.refine_iou}")
        if self.match_iou <= 0.0:
            raise ValueError("MOTConfig.match_iou must be > 0 (IoU 0 pairs would match anything)")
        if self.patience < 0:
            raise ValueError(f"MOTConfig.patience must be >= 0, got {self.patience}")
        if self.coast_frames < 0:
            raise ValueError(f"MOTConfig.coast_frames must be >= 0, got {self.coast_frames}")
        if self.birth_wait < 1:
            raise ValueError(f"MOTConfig.birth_wait must be >= 1, got {self.birth_wait}")
        if self.match_method not in ("hungarian", "greedy"):
            raise ValueError(f"MOTConfig.match_method must be 'hungarian' or 'greedy', got {self.match_method!r}")
        for det, pair in self.detector_scores.items():
            if len(pair) != 2:
                raise ValueError(f"MOTConfig.detector_scores[{det!r}] must be [min_score, birth_score], got {pair}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in pair):
                raise ValueError(f"MOTConfig.detector_scores[{det!r}] must hold two finite numbers, got {pair}")

    def scores_for(self, detector: str | None) -> tuple[float, float]:
        """``(min_score, birth_score)`` for sequences of public detector ``detector`` (None: defaults)."""
        if detector is not None and detector in self.detector_scores:
            lo, hi = self.detector_scores[detector]
            return float(lo), float(hi)
        return self.min_score, self.birth_score


@dataclass
class InferenceFileConfig:
    """The layout of ``configs/mot_inference.yaml``: the SOT to run and the MOT options.

    ``tracker``: registry name (``trackers.build_tracker``); ``model``: SOT architecture (config
    name in ``configs/`` or YAML path); ``checkpoint``: SOT weights (empty: the default lookup of
    ``evaluate.py``); ``max_batch``: largest SOT batch per network pass (None: all targets);
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...; ``mot``: :class:`MOTConfig`
    (the SOT-based trackers); ``tracktor``: :class:`~trackers.tracktor.config.TracktorConfig` (the
    ``tracktor`` tracker, which ignores ``model``, ``max_batch`` and ``mot``).
    """

    tracker: str = "siamrpn"
    model: str = "siamrpn_alex_tiny"
    checkpoint: str = ""
    max_batch: PositiveInt | None = None
    device: Device = "auto"
    mot: MOTConfig = field(default_factory=MOTConfig)
    tracktor: TracktorConfig = field(default_factory=TracktorConfig)
