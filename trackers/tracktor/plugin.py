"""The ``"tracktor"`` entry of the tracker registry (:func:`trackers.get_tracker`); the heavy
modules are imported on first use."""

from __future__ import annotations

from typing import Any

from deepmot.engine.protocol import SequenceFactory, TrackerPlugin


def _inference(cfg: Any, checkpoint: str | None) -> SequenceFactory:
    from trackers.tracktor.inference import build_inference

    return build_inference(cfg, checkpoint)


PLUGIN = TrackerPlugin("tracktor", build_inference=_inference)
