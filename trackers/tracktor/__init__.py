"""Tracking by detection, Tracktor-style, on the project's detector (:mod:`trackers.detection`).

``TracktorNet`` (:mod:`.model`) uses the detector's second stage to regress boxes given to it;
``TracktorTracker`` (:mod:`.tracker`) runs all tracks of a frame through it at once, with births
from public or private detections, NMS between tracks, re-identification of inactive tracks by
appearance within a patience window, ECC camera-motion compensation (:mod:`.cmc`) and an optional
constant-velocity model; its options are :class:`TracktorConfig` (:mod:`.config`).
``python evaluate.py --tracker tracktor`` runs it (registered by :mod:`.plugin`).
"""

from trackers.tracktor.config import TracktorConfig

__all__ = ["TracktorConfig"]
