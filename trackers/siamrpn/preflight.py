"""The SiamRPN's checks of a DeepMOT training config before its run directory is made (the
``check_trainable`` of the ``"siamrpn"`` plugin, called by :mod:`deepmot.engine.preflight`).

:func:`check_trainable` resolves the nested option lists (``model`` with ``model_overrides``, the
SOT pre-training overrides ``pretrain`` and the validation-inference overrides
``validation.mot``) and loads ``pretrained`` into the model. Each problem ends in one
:class:`~deepmot.config.ConfigError` whose one-line message names the option and the file.
"""

from __future__ import annotations

from typing import Any

from deepmot.config import ConfigError, load_config
from deepmot.errors import DataFormatError, MissingDataError
from deepmot.runtime.checkpoint import check_finite_state

__all__ = ["check_trainable"]


def _one_line(e: Exception) -> str:
    lines = str(e).splitlines()
    return lines[0] + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "")


def check_trainable(cfg: Any) -> None:
    """Validate the SiamRPN options of a :class:`~deepmot.engine.deepmot_config.DeepMOTTrainConfig`
    against the files they name (see the module docstring). Cheap: builds the model once on CPU."""
    from trackers.multi_config import MOTConfig
    from trackers.siamrpn.checkpoint import CheckpointMismatchError, load_pysot_checkpoint
    from trackers.siamrpn.config import load_siamrpn_config
    from trackers.siamrpn.model import build_siamrpn
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
