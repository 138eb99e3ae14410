"""Checks of everything a DeepMOT fine-tuning run reads, done before its run directory is made.

:func:`check_training_inputs` runs the tracker's own checks (its plugin's ``check_trainable``,
handed in by the entry point: for SiamRPN the model options, the nested override lists and
opening ``--pretrained``), finds the training and validation sequences of ``--data`` and loads
``--dhn-weights`` into a DHN. Each problem ends in one exception whose one-line message names the
option and the file: :class:`ConfigError` (a missing ``--data`` folder:
:class:`~deepmot.errors.MissingDataError`). The engine imports no tracker: what a tracker checks
reaches it only through the callable.
"""

from __future__ import annotations

from typing import Any, Callable

from deepmot.config import ConfigError
from deepmot.errors import MissingDataError
from deepmot.runtime.checkpoint import check_finite_state

__all__ = ["check_training_inputs"]


def _one_line(e: Exception) -> str:
    lines = str(e).splitlines()
    return lines[0] + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "")


def check_training_inputs(cfg: Any, check_tracker: Callable[[Any], None] | None = None) -> None:
    """Validate a :class:`~deepmot.engine.deepmot_config.DeepMOTTrainConfig` against the files it
    names (see the module docstring); ``check_tracker(cfg)``: the tracker's own checks, raising a
    one-line :class:`ConfigError` (None: the tracker has none). Runs no training."""
    from deepmot.datasets import discover_sequences, resolve_data_root
    from deepmot.dhn.model import DeepHungarianNet

    if check_tracker is not None:
        check_tracker(cfg)
    if cfg.data is not None:
        root = resolve_data_root(cfg.data, log=lambda _: None)
        checks = [(cfg.train_split, cfg.train_detections)]
        if cfg.eval_every > 0 or cfg.eval_before or cfg.eval_after:
            checks.append((cfg.validation.split, cfg.validation.detections))
        for split, dets in checks:
            if not discover_sequences(root, split, detections=dets or None):
                raise MissingDataError(f"--data: no sequences of split {split!r} with detector "
                                       f"variant(s) {dets}", root)
    try:
        dhn = DeepHungarianNet.pretrained(cfg.dhn)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--dhn-weights: {_one_line(e)}") from None
    check_finite_state(dhn.state_dict(), f"--dhn-weights {cfg.dhn or 'shipped weights'}")
