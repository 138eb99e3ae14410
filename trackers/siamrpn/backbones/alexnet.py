"""AlexNet backbones of PySOT: ``alexnetlegacy`` (one ``features`` Sequential) and ``alexnet``
(the same layers grouped as ``layer1``..``layer5``).

Both map a float32 BGR 0..255 crop ``(B, 3, H, W)`` to one feature map ``(B, C, H', W')`` with
total stride 8 and no padding (127 -> 6x6, 255 -> 22x22, 287 -> 26x26). ``C = int(256 * width_mult)``.
Layer order per stage: conv (with bias), BN, max-pool *before* ReLU in the first two stages,
and no ReLU after the last BN (spec ``pysot.md`` §2.1).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AlexNetLegacy", "AlexNet", "alexnet_channels"]

_BASE_CHANNELS = (96, 256, 384, 384, 256)


def alexnet_channels(width_mult: float) -> list[int]:
    """Channel widths ``[3, c1..c5]`` for a width multiplier (each ``int(c * width_mult)``)."""
    return [3] + [int(c * width_mult) for c in _BASE_CHANNELS]


def _stages(width_mult: float) -> list[list[nn.Module]]:
    c = alexnet_channels(width_mult)
    return [
        [nn.Conv2d(c[0], c[1], 11, stride=2), nn.BatchNorm2d(c[1]), nn.MaxPool2d(3, 2),
         nn.ReLU(inplace=True)],
        [nn.Conv2d(c[1], c[2], 5), nn.BatchNorm2d(c[2]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True)],
        [nn.Conv2d(c[2], c[3], 3), nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True)],
        [nn.Conv2d(c[3], c[4], 3), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True)],
        [nn.Conv2d(c[4], c[5], 3), nn.BatchNorm2d(c[5])],
    ]


class AlexNetLegacy(nn.Module):
    """PySOT ``alexnetlegacy``: keys ``features.{0,1,4,5,8,9,11,12,14,15}.*`` (also DaSiamRPN's
    ``featureExtract`` layout). ``forward``: ``(B,3,H,W)`` -> ``(B, int(256*width_mult), H', W')``."""

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        self.features = nn.Sequential(*[m for stage in _stages(width_mult) for m in stage])
        self.feature_size = alexnet_channels(width_mult)[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class AlexNet(nn.Module):
    """PySOT ``alexnet``: the legacy layers grouped as ``layer1``..``layer5`` (keys
    ``layerK.{0,1}.*``), so training can unfreeze stages by name. Same maths as the legacy net."""

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        for k, stage in enumerate(_stages(width_mult), start=1):
            self.add_module(f"layer{k}", nn.Sequential(*stage))
        self.feature_size = alexnet_channels(width_mult)[-1]

    def forward(self, x: Tensor) -> Tensor:
        for k in range(1, 6):
            x = getattr(self, f"layer{k}")(x)
        return x
