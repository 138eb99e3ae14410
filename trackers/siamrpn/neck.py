"""Necks of PySOT SiamRPN++: 1x1 conv + BN channel adjustment, with the template centre crop.

``AdjustLayer`` crops the centre ``center_size`` x ``center_size`` window of any feature map
narrower than 20 (the template: 15x15 -> 7x7, indices 4..10), after conv+BN; search features
are left whole. ``AdjustAllLayer`` applies one ``AdjustLayer`` per level (modules
``downsample2``, ``downsample3``, ... for several levels; ``downsample`` for a single level).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["AdjustLayer", "AdjustAllLayer", "NECKS", "build_neck"]

#: feature maps narrower than this are template features and get centre-cropped
CROP_BELOW_WIDTH = 20


class AdjustLayer(nn.Module):
    """``(B, in, H, W)`` -> ``(B, out, H, W)``, or the centre ``center_size``² window if ``W < 20``."""

    def __init__(self, in_channels: int, out_channels: int, center_size: int = 7):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                        nn.BatchNorm2d(out_channels))
        self.center_size = center_size

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if x.size(3) < CROP_BELOW_WIDTH:
            left = (x.size(3) - self.center_size) // 2
            right = left + self.center_size
            x = x[:, :, left:right, left:right]
        return x


class AdjustAllLayer(nn.Module):
    """One :class:`AdjustLayer` per feature level; a list in, a list out (a tensor for one level)."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], center_size: int = 7):
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError(f"AdjustAllLayer: {len(in_channels)} input levels but "
                             f"{len(out_channels)} output levels")
        self.num = len(out_channels)
        if self.num == 1:
            self.downsample = AdjustLayer(in_channels[0], out_channels[0], center_size)
        else:
            for i, (cin, cout) in enumerate(zip(in_channels, out_channels)):
                self.add_module(f"downsample{i + 2}", AdjustLayer(cin, cout, center_size))

    def forward(self, features: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        if self.num == 1:
            return self.downsample(features)
        return [getattr(self, f"downsample{i + 2}")(f) for i, f in enumerate(features)]


NECKS = {"AdjustLayer": AdjustLayer, "AdjustAllLayer": AdjustAllLayer}


def build_neck(name: str, **kwargs) -> nn.Module:
    """Neck by PySOT ``ADJUST.TYPE`` name."""
    if name not in NECKS:
        raise ValueError(f"unknown neck {name!r}; known: {', '.join(NECKS)}")
    return NECKS[name](**kwargs)
