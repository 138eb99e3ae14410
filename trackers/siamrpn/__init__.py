"""PySOT-compatible SiamRPN / SiamRPN++ (and DaSiamRPN) models, configs and checkpoint loading.

``build_siamrpn("siamrpn_alex_dwxcorr")`` builds a model from ``configs/``;
``load_pysot_checkpoint(model, path)`` loads PySOT / DaSiamRPN weights strictly;
``build_siamrpn_tracker(cfg)`` builds the network of the ``"siamrpn"`` registry entry
(:mod:`trackers.siamrpn.plugin`; inference: :mod:`.mot`, DeepMOT training: :mod:`.trainable`).
"""

from __future__ import annotations

from typing import Any

from .checkpoint import CheckpointMismatchError, LoadReport, load_pysot_checkpoint
from .config import SiamRPNConfig, SiamRPNTrainConfig, available_configs, load_siamrpn_config
from .model import SiamRPN, build_siamrpn

__all__ = ["SiamRPN", "SiamRPNConfig", "SiamRPNTrainConfig", "CheckpointMismatchError",
           "LoadReport", "available_configs", "build_siamrpn", "build_siamrpn_tracker",
           "load_pysot_checkpoint", "load_siamrpn_config"]


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def build_siamrpn_tracker(cfg: Any = None) -> SiamRPN:
    """A :class:`SiamRPN` in eval mode from ``cfg``: a :class:`SiamRPNConfig`, a config name or
    YAML path, or a mapping/object with ``model`` (config name or path; default
    ``"siamrpn_alex_dwxcorr"``) and optional ``checkpoint`` (PySOT / DaSiamRPN / pre-training
    weights, loaded strictly). Wrap it in ``trackers.siamrpn.tracker.BatchedSiamRPNTracker``."""
    if cfg is None or isinstance(cfg, (str, SiamRPNConfig)) or hasattr(cfg, "__fspath__"):
        return build_siamrpn(cfg or "siamrpn_alex_dwxcorr").eval()
    model = build_siamrpn(_get(cfg, "model", "siamrpn_alex_dwxcorr"))
    ckpt = _get(cfg, "checkpoint")
    if ckpt:
        load_pysot_checkpoint(model, ckpt)
    return model.eval()
