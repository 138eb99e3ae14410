"""The ``"tracktor"`` entry of the tracker registry (:func:`trackers.get_tracker`); the heavy
modules are imported on first use."""

from __future__ import annotations

from typing import Any

from deepmot.engine.protocol import SequenceFactory, TrackerPlugin, TrainContext


def _inference(cfg: Any, checkpoint: str | None) -> SequenceFactory:
    from trackers.tracktor.inference import build_inference

    return build_inference(cfg, checkpoint)


def _trainable(cfg: Any, ctx: TrainContext) -> Any:
    from trackers.tracktor.trainable import build_trainable

    return build_trainable(cfg, ctx)


def _check_trainable(cfg: Any) -> None:
    from trackers.tracktor.trainable import check_trainable

    check_trainable(cfg)


PLUGIN = TrackerPlugin("tracktor", build_inference=_inference, build_trainable=_trainable,
                       check_trainable=_check_trainable)
