"""Tracktor in the inference protocol: the factory ``evaluate.py --tracker tracktor`` runs."""

from __future__ import annotations

from typing import Any

from deepmot.engine.protocol import SequenceFactory
from deepmot.runtime.device import resolve_device
from trackers.tracktor.model import load_tracktor_net
from trackers.tracktor.tracker import tracktor_factory

__all__ = ["build_inference"]


def build_inference(cfg: Any, checkpoint: str | None) -> SequenceFactory:
    """The ``"tracktor"`` inference entry: the detector (or Tracktor) weights ``checkpoint``
    (see :func:`~trackers.tracktor.model.load_tracktor_net`) on ``cfg.device``, tracking with
    ``cfg.tracktor`` (:class:`~trackers.tracktor.config.TracktorConfig`)."""
    if not checkpoint:
        raise ValueError("tracktor needs detector weights (--checkpoint PATH)")
    net = load_tracktor_net(checkpoint, resolve_device(cfg.device))
    return tracktor_factory(net, cfg.tracktor)
