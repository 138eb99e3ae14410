"""Options of DeepMOT fine-tuning (``train.py --tracker NAME``): :class:`DeepMOTTrainConfig`
with its validation and augmentation sections. Every field can be set from YAML or with
``--set key=value``; the tracker reads the fields that concern it (for SiamRPN: ``model``,
``pretrained``, ``frozen_convs``, ``focal_*``, ``size_smoothing``, ``augment``).
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Annotated, Literal

from deepmot.config import Device, Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, Range

__all__ = ["DeepMOTTrainConfig", "AugmentConfig", "ValidationConfig"]


@dataclass
class AugmentConfig:
    """Augmentation of new templates and search crops (DeepMOT v1 values, specs §6.6)."""

    birth_scale_prob: Fraction = 0.4    # box w/h jitter of born tracks' templates
    refresh_scale_prob: Fraction = 0.2  # same, on template refresh
    scale_range: list[Positive] = field(default_factory=lambda: [0.8, 1.2])
    template_photometric_prob: Fraction = 0.2  # luminance / blur / noise, each with this prob.
    search_photometric_prob: Fraction = 0.25

    def __post_init__(self) -> None:
        if len(self.scale_range) != 2 or self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with low <= high, got {self.scale_range}")


@dataclass
class ValidationConfig:
    """Validation by multi-object inference with public detections (``trackers.multi``).

    ``split``/``frames``: which sequences and frames (MOT17: ``train`` + ``val-half``; the
    synthetic set: ``val`` + ``full``, never ``test``: choices are made on it). ``detections``:
    MOT17 detector variants to run. ``max_sequences``: cap (None = all). ``mot``: ``a.b=value``
    overrides of the tracker's inference config (SiamRPN: ``trackers.multi_config.MOTConfig``
    keys). The same section describes the ``test`` split of the final report.
    """

    split: str = "val"
    frames: str = "full"
    detections: list[str] = field(default_factory=lambda: ["FRCNN"])
    max_sequences: PositiveInt | None = None
    mot: list[str] = field(default_factory=list)


@dataclass
class DeepMOTTrainConfig:
    """Every option of DeepMOT fine-tuning (``--set key=value`` overrides any of them).

    Reference values (DeepMOT v1 code, specs/deepmot.md §6.3): ``lr=1e-4``, ``epochs=30``,
    ``seq_len=100``, ``num_repeats=3``, ``refresh_every=10``, ``delta=0.7``, ``temperature=10``,
    ``w_motp=5``, ``w_ids=1``; the focal term is ``10 x (10 x focal)`` in v1, i.e. ``w_focal=100``
    against the dMOTA error (§8.11).

    The per-frame loss is ``w_mota * dMOTA + w_motp * dMOTP + w_focal * aux`` (``w_mota=1`` in
    the paper; ``w_ids`` weighs the soft ID switches inside dMOTA). ``aux`` is the tracker's own
    loss: SiamRPN's anchor focal loss; for Tracktor, DeepMOT-Tracktor's appearance branch (the
    criterion on appearance distances; ``w_focal > 0`` adds and trains the appearance head,
    ``w_focal=1`` is the paper's weight, 0 trains the box regression only). A zero weight leaves
    its term out of the loss altogether (the ablations); at least one weight must be positive.
    """

    name: str = "deepmot_siamrpn"
    tracker: str = "siamrpn"             # registry name (trackers.get_tracker); train.py --tracker
    seed: NonNegativeInt = 0
    threads: PositiveInt = 2
    device: Device = "auto"
    runs_root: str = "runs"
    # data
    data: str | None = None              # MOT-format root; None: data/MOT17, else the synthetic set
    train_split: str = "train"
    train_frames: str = "full"           # "full" or "train-half" (MOT17 half split)
    train_detections: list[str] = field(default_factory=lambda: ["DPM"])  # one copy per sequence
    min_vis: Fraction = 0.0
    # tracker
    model: str = "siamrpn_alex_tiny"     # SiamRPN config name in configs/ or a YAML path
    model_overrides: list[str] = field(default_factory=list)
    pretrained: str | None = None        # PySOT / DaSiamRPN weights; None: SOT pre-training first
    pretrain: list[str] = field(default_factory=list)   # PretrainConfig overrides (steps=..., ...)
    size_smoothing: bool = False         # v1's lr-smoothed box as the differentiable output
    frozen_convs: NonNegativeInt = 3     # first backbone convolutions kept frozen
    train_params: str | None = None      # regex: train only the parameters whose name matches
    # criterion
    dhn: str | None = None               # DHN weights; None: the shipped DeepHungarianNet.pretrained()
    iou_threshold: NonNegative = 0.5     # IoU gate of the criterion (> 1 forbids every pair)
    delta: Fraction = 0.7
    temperature: Positive = 10.0
    w_mota: NonNegative = 1.0            # dMOTA term (0: focal and/or dMOTP only)
    w_motp: NonNegative = 5.0
    w_ids: NonNegative = 1.0
    ids_mode: Literal["paper", "v1"] = "paper"
    assignment: Literal["dhn", "sinkhorn"] = "dhn"  # soft assignment in dMOTA: DHN (paper) | Sinkhorn (no weights)
    gate: Literal["hard", "soft", "none"] = "hard"  # what it sees of IoU < iou_threshold pairs
    gate_width: Positive = 0.05          # soft gate: sigmoid width in IoU
    sinkhorn_eps: Positive = 0.05        # sinkhorn: entropic regularisation (distance units)
    sinkhorn_iters: PositiveInt = 50
    w_focal: NonNegative = 100.0         # the tracker's own loss (SiamRPN: focal; Tracktor: appearance, > 0 = on)
    focal_gamma: NonNegative = 2.0
    focal_pos_iou: Fraction = 0.6
    focal_neg_iou: Fraction = 0.3
    focal_distractor: NonNegative = 0.0  # weight of negatives on other GT objects (0: reference loss)
    # loop
    epochs: PositiveInt = 30
    max_steps: PositiveInt | None = None  # stop after this many optimiser steps
    seq_len: Annotated[int, Range(ge=2)] = 100
    num_repeats: PositiveInt = 3
    refresh_every: NonNegativeInt = 10
    train_coast: NonNegativeInt = 0      # frames an unmatched training track lives on (0: ends at once)
    clips_per_step: PositiveInt = 1      # clips trained side by side (global, over all ranks)
    lr: Positive = 1e-4
    grad_clip: Positive | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # logging, evaluation, checkpoints
    log_every: PositiveInt = 20
    log_grad_terms: bool = False         # log per-term gradient norms (one extra backward each)
    eval_every: NonNegativeInt = 500     # steps; 0 disables periodic evaluation
    eval_before: bool = True             # evaluate the starting tracker too
    eval_after: bool = True              # evaluate the final tracker
    best_metric: str = "MOTA"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # final report (deepmot.engine.final_report): start / shipped / after on validation, test once
    hand_back: Literal["best", "last"] = "best"  # "best": the best validated model, step 0 included
    shipped_baseline: bool = True        # also validate the tracker's shipped weights (if it has any)
    test: ValidationConfig | None = None  # evaluated once, after training; None: no test row
    checkpoint_every: PositiveInt = 1    # clip batches between checkpoints

    def __post_init__(self) -> None:
        weights = {"w_mota": self.w_mota, "w_motp": self.w_motp, "w_focal": self.w_focal}
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"loss weights {weights}: at least one must be > 0 (else nothing trains)")
        if self.train_params is not None:
            try:
                re.compile(self.train_params)
            except re.error as e:
                raise ValueError(f"train_params={self.train_params!r} is not a regular expression: {e}") from None
        if self.focal_neg_iou > self.focal_pos_iou:
            raise ValueError(f"focal_neg_iou={self.focal_neg_iou} must not exceed "
                             f"focal_pos_iou={self.focal_pos_iou}")
