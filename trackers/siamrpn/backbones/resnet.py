"""PySOT's "atrous" ResNet-50 (``resnet50``): total stride 8, dilated layer3/layer4.

Differences from torchvision (spec ``pysot.md`` §2.1): the 7x7 stem conv has padding 0; a
stride-2 3x3 conv has padding 0; the downsample shortcut of layer2..4 is a *3x3* conv; layer3
and layer4 keep stride 1 and use dilation 2 and 4 (their first block dilation 1 and 2). Input
``(B,3,H,W)`` float32 BGR 0..255; output the selected stages of ``[stem, layer1..layer4]``
(``used_layers``), a list, or a bare tensor when only one is selected. 127 -> 15x15, 255 -> 31x31
for layers 2-4 (channels 512, 1024, 2048).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

__all__ = ["Bottleneck", "ResNet", "resnet50"]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) bottleneck with an optional ``downsample``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        padding = 2 - stride
        if downsample is not None and dilation > 1:
            dilation = dilation // 2
        if dilation > 1:
            padding = dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=padding,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """Atrous ResNet over ``Bottleneck`` blocks; layer3/layer4 are built only when used."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), used_layers: Sequence[int] = (2, 3, 4)):
        super().__init__()
        self.used_layers = list(used_layers)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2) if 3 in self.used_layers else nn.Identity()
        self.layer4 = self._make_layer(512, layers[3], dilation=4) if 4 in self.used_layers else nn.Identity()
        channels = [64, 256, 512, 1024, 2048]
        self.feature_size = [channels[i] for i in self.used_layers]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        out = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out:
            if stride == 1 and dilation == 1:
                conv = nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False)
            else:
                dd = dilation // 2 if dilation > 1 else 1
                pad = dd if dilation > 1 else 0
                conv = nn.Conv2d(self.inplanes, out, 3, stride=stride, padding=pad, dilation=dd,
                                 bias=False)
            downsample = nn.Sequential(conv, nn.BatchNorm2d(out))
        blocks_ = [Bottleneck(self.inplanes, planes, stride, downsample, dilation)]
        self.inplanes = out
        blocks_ += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        p1 = self.layer1(self.maxpool(stem))
        p2 = self.layer2(p1)
        p3 = self.layer3(p2)
        p4 = self.layer4(p3)
        outs = [stem, p1, p2, p3, p4]
        picked = [outs[i] for i in self.used_layers]
        return picked[0] if len(picked) == 1 else picked


def resnet50(used_layers: Sequence[int] = (2, 3, 4)) -> ResNet:
    """PySOT ``resnet50``: ``ResNet([3, 4, 6, 3], used_layers)``."""
    return ResNet((3, 4, 6, 3), used_layers)
