"""Backbones of PySOT-compatible SiamRPN models, built by PySOT's ``BACKBONE.TYPE`` names."""

from __future__ import annotations

from typing import Any

from torch import nn

from .alexnet import AlexNet, AlexNetLegacy
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet, resnet50

__all__ = ["BACKBONES", "build_backbone", "AlexNet", "AlexNetLegacy", "MobileNetV2", "ResNet",
           "resnet50"]

BACKBONES = {
    "alexnetlegacy": AlexNetLegacy,
    "alexnet": AlexNet,
    "resnet50": resnet50,
    "mobilenetv2": MobileNetV2,
}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Backbone by PySOT type name (``alexnetlegacy``, ``alexnet``, ``resnet50``, ``mobilenetv2``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)
