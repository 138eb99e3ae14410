"""Options of the Tracktor tracker (:mod:`trackers.tracktor.tracker`), with Tracktor's values as defaults.

Defaults follow Tracktor++ with the DeepMOT-Tracktor inference settings (Bergmann et al., "Tracking
without bells and whistles", ICCV 2019; Xu et al., "How To Train Your Deep Multi-Object Tracker",
CVPR 2020, the Tracktor experiments): detection and regression person thresholds 0.5, detection NMS
0.3, regression NMS 0.6, camera-motion compensation on (ECC, Euclidean, 100 iterations, eps 1e-5),
motion model off, re-identification on with the distance ``0.5 * (1 - cos)``, similarity threshold
0.11698, IoU gate 0.2, inactive patience 20, at most 10 stored appearance vectors per track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deepmot.config import Fraction, NonNegative, NonNegativeInt, PositiveInt

__all__ = ["TracktorConfig"]


@dataclass
class TracktorConfig:
    """Every threshold of :class:`~trackers.tracktor.tracker.TracktorTracker` (IoU and scores in [0, 1]).

    Births: ``detections`` picks where new tracks come from: ``public`` (the sequence's
    ``det/det.txt`` boxes, each regressed and scored by the detector's RoI head: Tracktor's
    public-detection mode) or ``private`` (the detector run on the whole frame). Detections scoring
    above ``det_thresh`` are kept, suppressed among themselves at ``det_nms`` and dropped where they
    overlap a live track at IoU > ``cover_iou`` (``null``: ``det_nms``, as Tracktor); the rest
    re-identify inactive tracks or start new ones.

    Tracks: every live box is regressed by the RoI head on the new frame; a track whose person score
    is not above ``reg_thresh`` goes inactive, and of two live tracks overlapping at IoU > ``reg_nms``
    the lower-scoring one goes inactive.

    Re-identification (``reid``): an inactive track is re-activated by a remaining detection when
    their boxes overlap at IoU >= ``reid_iou`` and the appearance distance ``0.5 * (1 - cos)``
    between the mean of the track's last ``max_features`` embeddings and the detection's is at
    most ``reid_sim`` (one-to-one, Hungarian). Inactive tracks die after ``patience`` frames.
    ``embedding``: ``box_head`` (the RoI box head's representation, or the trained appearance head
    when the weights hold one) or ``roi_pool`` (the RoI-pooled FPN features averaged over space).

    Camera motion (``cmc``): OpenCV ECC between consecutive grayscale frames (``cmc_mode``
    euclidean | affine | translation, ``cmc_iterations``, ``cmc_eps``), computed on frames resized
    by ``cmc_scale``; every box is warped before regression. Motion model (``motion``): each box
    moves by its mean velocity over the last ``motion_steps`` frames (centre only with
    ``motion_center_only``) before regression; inactive tracks keep moving.
    """

    detections: Literal["public", "private"] = "public"
    det_thresh: Fraction = 0.5
    reg_thresh: Fraction = 0.5
    det_nms: Fraction = 0.3
    cover_iou: Fraction | None = None
    reg_nms: Fraction = 0.6
    reid: bool = True
    embedding: Literal["box_head", "roi_pool"] = "box_head"
    reid_sim: NonNegative = 0.11698
    reid_iou: Fraction = 0.2
    patience: NonNegativeInt = 20
    max_features: PositiveInt = 10
    cmc: bool = True
    cmc_mode: Literal["euclidean", "affine", "translation"] = "euclidean"
    cmc_iterations: PositiveInt = 100
    cmc_eps: NonNegative = 1e-5
    cmc_scale: Fraction = 1.0
    motion: bool = False
    motion_steps: PositiveInt = 5
    motion_center_only: bool = True

    def __post_init__(self) -> None:
        if self.detections not in ("public", "private"):
            raise ValueError(f"tracktor.detections must be 'public' or 'private', got {self.detections!r}")
        if self.embedding not in ("box_head", "roi_pool"):
            raise ValueError(f"tracktor.embedding must be 'box_head' or 'roi_pool', got {self.embedding!r}")
        if self.cmc_mode not in ("euclidean", "affine", "translation"):
            raise ValueError(f"tracktor.cmc_mode must be euclidean, affine or translation, got {self.cmc_mode!r}")
        if self.cmc and self.cmc_scale <= 0:
            raise ValueError("tracktor.cmc_scale must be > 0")
