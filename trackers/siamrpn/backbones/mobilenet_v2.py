"""PySOT's MobileNetV2 (``mobilenetv2``): stages ``layer0``..``layer7`` with dilated late stages.

Differences from torchvision (spec ``pysot.md`` §2.1): the stem conv has padding 0; stride-2
depthwise convs have padding 0; every inverted residual has its 1x1 expansion conv, even for
expansion 1; layers 4..7 keep stride 1 and dilate instead. Input ``(B,3,H,W)`` float32 BGR
0..255; output the stages listed in ``used_layers`` (list, or bare tensor for one). With
``width_mult=1.4`` and ``used_layers=[3,5,7]``: channels 44/134/448, 127 -> 15x15, 255 -> 31x31.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion t, channels c, blocks n, stride s, dilation d) per stage layer1..layer7
_SETTINGS = ((1, 16, 1, 1, 1), (6, 24, 2, 2, 1), (6, 32, 3, 2, 1), (6, 64, 4, 1, 2),
             (6, 96, 3, 1, 2), (6, 160, 3, 1, 4), (6, 320, 1, 1, 4))


class InvertedResidual(nn.Module):
    """``conv``: 1x1 expand, BN, ReLU6, 3x3 depthwise (stride, dilation), BN, ReLU6, 1x1, BN;
    residual when ``stride == 1`` and ``inp == oup``."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1):
        super().__init__()
        hidden = inp * expand_ratio
        padding = dilation if dilation > 1 else 2 - stride
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=padding, dilation=dilation,
                      groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """PySOT MobileNetV2 backbone; ``feature_size`` lists the channels of the used stages."""

    def __init__(self, width_mult: float = 1.0, used_layers: Sequence[int] = (3, 5, 7)):
        super().__init__()
        self.used_layers = list(used_layers)
        inp = int(32 * width_mult)
        self.layer0 = nn.Sequential(nn.Conv2d(3, inp, 3, stride=2, padding=0, bias=False),
                                    nn.BatchNorm2d(inp), nn.ReLU6(inplace=True))
        channels = [inp]
        last_dilation = 1
        for idx, (t, c, n, s, d) in enumerate(_SETTINGS, start=1):
            oup = int(c * width_mult)
            first_d = d if d == last_dilation else max(d // 2, 1)
            blocks = [InvertedResidual(inp, oup, s, t, first_d)]
            blocks += [InvertedResidual(oup, oup, 1, t, d) for _ in range(1, n)]
            self.add_module(f"layer{idx}", nn.Sequential(*blocks))
            inp, last_dilation = oup, d
            channels.append(oup)
        self.feature_size = [channels[i] for i in self.used_layers]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        outs = []
        for idx in range(8):
            x = getattr(self, f"layer{idx}")(x)
            outs.append(x)
        picked = [outs[i] for i in self.used_layers]
        return picked[0] if len(picked) == 1 else picked
