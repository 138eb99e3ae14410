"""Deep Hungarian Network: model, random training matrices, metrics and training loop."""

from deepmot.dhn.model import DeepHungarianNet, DHNConfig

__all__ = ["DeepHungarianNet", "DHNConfig"]
