"""What the engine needs from a tracker: the trainable-tracker protocol of the DeepMOT loop and
the inference protocol of evaluation.

This module is the one part of :mod:`deepmot.engine` that ``trackers/`` may import; the engine
itself imports no tracker. A tracker package exposes a :class:`TrackerPlugin` to the registry in
``trackers/__init__.py``; the entry points (``train.py``, ``evaluate.py``) look it up by name
and hand its builders to the engine.

Training (:mod:`deepmot.engine.deepmot_train`): the plugin's ``build_trainable(cfg, ctx)``
returns a :class:`TrainableTracker` holding the network (``module``) with its starting weights.
For every training clip the loop asks it for an empty :class:`TrainTracks`, starts tracks from
GT boxes, and on each frame calls :meth:`TrainTracks.step` once per repeat: a differentiable
step of every live track that does **not** change the track state, so every repeat starts from
the same previous-frame state; :meth:`TrainTracks.advance` then moves the state on with the last
repeat's output. The criterion sees ``StepOutput.boxes``; the tracker adds its own auxiliary
loss (:meth:`TrainableTracker.aux_loss`, weighted by the config's ``w_focal``), which may use the
loop's criterion (handed over by the optional ``set_criterion``).

Inference (:mod:`deepmot.engine.inference`): a :data:`SequenceFactory` makes a fresh
:class:`SequenceTracker` per sequence, which gets every frame's image and public detections
and returns its boxes and ids at the end.

Boxes are pixel ``x1, y1, x2, y2`` with the image's 0-based origin in training; the inference
protocol works in MOTChallenge's 1-based coordinates (what the result files hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["StepOutput", "TrainTracks", "TrainableTracker", "TrainContext", "SequenceTracker",
           "SequenceFactory", "TrackerPlugin"]


# --------------------------------------------------------------------------- training
@dataclass
class StepOutput:
    """One differentiable step of N live tracks.

    ``ids``: the N track ids (row order); ``boxes (N, 4)``: their boxes in this frame, 0-based
    pixel xyxy, differentiable w.r.t. the trainable parameters; ``embeddings (N, D)``: optional
    appearance vectors; ``aux_input``: the tensor the tracker's auxiliary loss is computed from
    (the loop reports gradient norms against it), or None; ``state``: the tracker's own step
    result, given back to :meth:`TrainTracks.advance` and :meth:`TrainableTracker.aux_loss`.
    """

    ids: list[int]
    boxes: Tensor
    embeddings: Tensor | None = None
    aux_input: Tensor | None = None
    state: Any = None


class TrainTracks(Protocol):
    """The live tracks of one training clip. ``gen`` is the clip's RNG for augmentations."""

    @property
    def ids(self) -> list[int]:
        """Live track ids, in row order."""

    def __len__(self) -> int:
        """Number of live tracks."""

    def add(self, image: np.ndarray, boxes: Tensor, gen: torch.Generator) -> list[int]:
        """Start tracks at ``boxes (K, 4)`` (0-based xyxy) in BGR uint8 ``image``; returns their ids."""

    def reinit(self, image: np.ndarray, ids: Sequence[int], boxes: Tensor, gen: torch.Generator) -> None:
        """Restart tracks ``ids`` from ``boxes (K, 4)`` (a template refresh), ids kept."""

    def remove(self, ids: Sequence[int]) -> None:
        """End tracks ``ids``."""

    def step(self, image: np.ndarray, gen: torch.Generator) -> StepOutput:
        """The differentiable step of every live track into ``image``; the state is unchanged."""

    def advance(self, out: StepOutput) -> None:
        """Move the state on to ``out`` (an output of :meth:`step` on the current frame)."""


class TrainableTracker(Protocol):
    """A tracker the DeepMOT loop can fine-tune.

    ``module``: the network (its ``state_dict`` is checkpointed and written as ``weights_name``
    in the run directory); ``frozen``: names of parameters kept frozen; ``aux_name``: the log key
    of :meth:`aux_loss`.

    Optional members:

    * ``shipped_state() -> (state_dict | None, str)``: the weights the tracker ships for this
      ``module`` as a state dict and their path, or ``(None, why not)`` when absent or not fitting
      (:mod:`deepmot.engine.final_report` validates them as the ``shipped`` baseline; absent: the
      final report has no ``shipped`` row);
    * ``set_criterion(criterion)``: called once by the loop with its own
      :class:`~deepmot.criterion.DeepMOTLoss` (built from the config: soft assignment, ``delta``,
      ``temperature``), for an auxiliary loss that applies the same criterion to other distances
      (Tracktor's appearance branch).
    """

    module: nn.Module
    frozen: list[str]
    weights_name: str
    aux_name: str

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""

    def new_tracks(self) -> TrainTracks:
        """An empty track set for a new clip."""

    def aux_loss(self, out: StepOutput, target: Tensor, present: Tensor, gt_boxes: Tensor) -> Tensor | None:
        """The tracker's own loss (0-d) given, per row of ``out``, the box ``target (N, 4)`` of
        the GT object the track follows and ``present (N,)`` bool whether it is in the frame, and
        every training GT box of the frame ``gt_boxes (M, 4)`` (0-based pixel xyxy; the other
        objects, e.g. for distractor negatives); None when the tracker has none."""

    def sequence_factory(self, mot: list[str]) -> "SequenceFactory":
        """Inference over the current weights (``mot``: ``key=value`` overrides of the
        tracker's inference options), for validation."""


@dataclass
class TrainContext:
    """What a tracker builder may use: the run directory, the training data root, the device,
    whether this is rank 0, a logger function and a barrier over ranks."""

    run_dir: Path
    data_root: Path
    device: torch.device
    main: bool
    log: Callable[..., None]
    barrier: Callable[[], None]


# --------------------------------------------------------------------------- inference
class SequenceTracker(Protocol):
    """A multi-object tracker running over one sequence."""

    def step(self, image: np.ndarray, det_boxes: Tensor, det_scores: Tensor, frame: int) -> Any:
        """Track into frame ``frame`` (1-based) with BGR uint8 ``image`` and public detections
        ``det_boxes (D, 4)`` (1-based xyxy) and ``det_scores (D,)``."""

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(frames (R,), ids (R,), boxes (R, 4) x, y, w, h 1-based, scores (R,))`` so far."""


#: a per-sequence tracker factory: ``f(seq_info) -> SequenceTracker`` (``seq_info``: a
#: :class:`~deepmot.datasets.SeqInfo` or None)
SequenceFactory = Callable[[Any], SequenceTracker]


@dataclass(frozen=True)
class TrackerPlugin:
    """A tracker as the registry (``trackers.get_tracker``) hands it to the entry points.

    ``build_inference(cfg, checkpoint)``: a :data:`SequenceFactory` from an inference config
    (``trackers.multi_config.InferenceFileConfig``) and weights; ``build_trainable(cfg, ctx)``:
    a :class:`TrainableTracker` from a DeepMOT training config (None: not trainable);
    ``build_model(cfg)``: the bare network (None: the tracker has no single network);
    ``check_trainable(cfg)``: the tracker's checks of a DeepMOT training config (its options, the
    weights it would load) before any run directory is made, raising a one-line
    ``deepmot.config.ConfigError`` (None: nothing to check beyond the config's own types).
    """

    name: str
    build_inference: Callable[[Any, str | None], SequenceFactory]
    build_trainable: Callable[[Any, TrainContext], TrainableTracker] | None = None
    build_model: Callable[[Any], nn.Module] | None = None
    check_trainable: Callable[[Any], None] | None = None
