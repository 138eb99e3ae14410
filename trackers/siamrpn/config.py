"""Typed config of a PySOT-compatible SiamRPN model: architecture, anchors, tracking and
SOT-training hyper-parameters (PySOT's ``experiments/*/config.yaml``, spec ``pysot.md`` §1, §7).

Configs live in ``configs/<name>.yaml`` at the repository root; :func:`load_siamrpn_config`
accepts such a name or any YAML path, plus ``a.b=value`` overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from deepmot.config import Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, load_config
from trackers.siamrpn.anchors import score_size

__all__ = ["SiamRPNConfig", "SiamRPNTrainConfig", "CONFIG_DIR", "available_configs",
           "load_siamrpn_config"]

#: ``configs/`` of the repository (two levels above this package)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class SiamRPNTrainConfig:
    """SOT-training settings (PySOT ``TRAIN``/``DATASET``): pair sampling, augmentation, anchor
    targets and loss weights. Sizes in crop pixels; shifts in search/template-crop pixels."""

    search_size: PositiveInt = 255    # search crop side during training
    thr_high: Fraction = 0.6          # anchor IoU above which it is positive
    thr_low: Fraction = 0.3           # anchor IoU below which it is negative
    pos_num: NonNegativeInt = 16      # at most this many positives per pair
    total_num: PositiveInt = 64       # positives + negatives per pair
    neg_num: NonNegativeInt = 16      # negatives per negative pair (near the target cell)
    cls_weight: NonNegative = 1.0
    loc_weight: NonNegative = 1.2
    template_shift: NonNegative = 4.0
    template_scale: NonNegative = 0.05
    search_shift: NonNegative = 64.0
    search_scale: NonNegative = 0.18
    color: Fraction = 1.0             # probability of the PCA colour jitter
    gray: Fraction = 0.0              # probability of a grey pair
    neg: Fraction = 0.2               # probability of a negative pair (different objects)
    frame_range: NonNegativeInt = 100  # template/search frames at most this far apart

    def __post_init__(self) -> None:
        if self.thr_low > self.thr_high:
            raise ValueError(f"train.thr_low={self.thr_low} must not exceed train.thr_high={self.thr_high}")


@dataclass
class SiamRPNConfig:
    """Architecture + anchors + tracker hyper-parameters of one SiamRPN model.

    ``backbone``/``neck``/``head`` are PySOT type names (``alexnetlegacy``, ``alexnet``,
    ``resnet50``, ``mobilenetv2``; ``AdjustAllLayer``/``AdjustLayer`` or None; ``DepthwiseRPN``,
    ``MultiRPN``, ``UPChannelRPN``) with their constructor kwargs. Sizes are crop pixels.
    """

    name: str = "siamrpn_alex_dwxcorr"
    backbone: str = "alexnetlegacy"
    backbone_kwargs: dict = field(default_factory=lambda: {"width_mult": 1.0})
    neck: str | None = None
    neck_kwargs: dict = field(default_factory=dict)
    head: str = "DepthwiseRPN"
    head_kwargs: dict = field(default_factory=lambda: {"anchor_num": 5, "in_channels": 256,
                                                       "out_channels": 256})
    # anchors
    anchor_stride: PositiveInt = 8
    anchor_ratios: list[Positive] = field(default_factory=lambda: [0.33, 0.5, 1.0, 2.0, 3.0])
    anchor_scales: list[Positive] = field(default_factory=lambda: [8.0])
    # tracking procedure details: "pysot", or "dasiamrpn" (DaSiamRPN / DeepMOT v1 under
    # Python 3: anchor grid half a stride up-left, round() crop origin, x + w/2 centre; §9.4)
    flavour: str = "pysot"
    # tracking (PySOT TRACK.*)
    tracker: str = "SiamRPNTracker"
    exemplar_size: PositiveInt = 127
    instance_size: PositiveInt = 255
    base_size: NonNegativeInt = 8
    context_amount: NonNegative = 0.5
    penalty_k: NonNegative = 0.04
    window_influence: Fraction = 0.44
    lr: Fraction = 0.4
    lost_instance_size: PositiveInt = 831
    confidence_low: Fraction = 0.85
    confidence_high: Fraction = 0.998
    train: SiamRPNTrainConfig = field(default_factory=SiamRPNTrainConfig)

    @property
    def anchor_num(self) -> int:
        """A = number of ratios x number of scales."""
        return len(self.anchor_ratios) * len(self.anchor_scales)

    def score_size_for(self, instance_size: int) -> int:
        """Side S of the score map for a search crop of ``instance_size`` pixels."""
        return score_size(instance_size, self.exemplar_size, self.anchor_stride, self.base_size)

    @property
    def score_size(self) -> int:
        """Score-map side S at tracking time (``instance_size``)."""
        return self.score_size_for(self.instance_size)

    @property
    def train_score_size(self) -> int:
        """Score-map side S at training time (``train.search_size``)."""
        return self.score_size_for(self.train.search_size)


def available_configs() -> list[str]:
    """Names of the SiamRPN configs shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")
                  if p.stem.startswith(("siamrpn_", "dasiamrpn_")))


def load_siamrpn_config(name_or_path: str | os.PathLike | SiamRPNConfig,
                        overrides: Iterable[str] = ()) -> SiamRPNConfig:
    """A :class:`SiamRPNConfig` from a config name (``"siamrpn_alex_dwxcorr"`` ->
    ``configs/siamrpn_alex_dwxcorr.yaml``), a YAML path, or a config (returned as is)."""
    if isinstance(name_or_path, SiamRPNConfig):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"unknown SiamRPN config {str(name_or_path)!r} (no {path}); "
                                    f"available: {', '.join(available_configs())}")
    return load_config(SiamRPNConfig, path, overrides)


