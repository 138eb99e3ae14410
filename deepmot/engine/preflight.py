"""Checks of everything a DeepMOT fine-tuning run reads, done before its run directory is made.

:func:`check_training_inputs` resolves the nested option lists (SiamRPN model overrides, SOT
pre-training and validation-inference overrides), finds the training and validation sequences
of ``--data``, loads ``--pretrained`` into the model and ``--dhn`` into a DHN. Each problem ends
in one exception whose one-line message names the option and the file: :class:`ConfigError`
(a missing ``--data`` folder: :class:`~deepmot.errors.MissingDataError`).
"""

from __future__ import annotations

from typing import Any

from deepmot.config import ConfigError, load_config
from deepmot.engine.checkpoint import check_finite_state
from deepmot.errors import DataFormatError, MissingDataError

__all__ = ["check_training_inputs"]


def _one_line(e: Exception) -> str:
    lines = str(e).splitlines()
    return lines[0] + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "")


def check_training_inputs(cfg: Any) -> None:
    """Validate a :class:`~deepmot.engine.deepmot_train.DeepMOTTrainConfig` against the files it
    names (see the module docstring). Cheap: builds the model once on CPU, runs no training."""
    from deepmot.datasets import discover_sequences
    from trackers.multi_config import MOTConfig
    from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
    from trackers.siamrpn.checkpoint import CheckpointMismatchError
    from trackers.siamrpn.config import load_siamrpn_config
    from trackers.siamrpn.pretrain import PretrainConfig

    try:
        mcfg = load_siamrpn_config(cfg.model, cfg.model_overrides)
    except FileNotFoundError as e:
        raise ConfigError(f"model: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"model / model_overrides: {e}") from None
    for key, cls, overrides in (("pretrain", PretrainConfig, cfg.pretrain),
                                ("validation.mot", MOTConfig, cfg.validation.mot)):
        try:
            load_config(cls, None, overrides)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
    if cfg.data is not None:
        from deepmot.datasets import resolve_data_root

        root = resolve_data_root(cfg.data, log=lambda _: None)
        checks = [(cfg.train_split, cfg.train_detections)]
        if cfg.eval_every > 0 or cfg.eval_before or cfg.eval_after:
            checks.append((cfg.validation.split, cfg.validation.detections))
        for split, dets in checks:
            if not discover_sequences(root, split, detections=dets or None):
                raise MissingDataError(f"--data: no sequences of split {split!r} with detector "
                                       f"variant(s) {dets}", root)
    if cfg.pretrained:
        model = build_siamrpn(mcfg)
        try:
            load_pysot_checkpoint(model, cfg.pretrained)
        except CheckpointMismatchError as e:
            r = e.report
            raise ConfigError(
                f"--pretrained: {cfg.pretrained}: does not fit model {cfg.model!r} ({len(r.missing)} "
                f"missing, {len(r.unexpected)} unexpected, {len(r.mismatched)} mis-shaped keys; e.g. "
                f"{(r.missing or r.unexpected or [k for k, _, _ in r.mismatched])[0]!r})") from None
        except (DataFormatError, MissingDataError) as e:
            raise ConfigError(f"--pretrained: {_one_line(e)}") from None
        check_finite_state(model.state_dict(), f"--pretrained {cfg.pretrained}")
    from deepmot.dhn.model import DeepHungarianNet

    try:
        dhn = DeepHungarianNet.pretrained(cfg.dhn)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--dhn: {_one_line(e)}") from None
    check_finite_state(dhn.state_dict(), f"--dhn {cfg.dhn or 'shipped weights'}")
