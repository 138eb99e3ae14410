"""RPN heads of PySOT / DaSiamRPN and their batched cross-correlations.

Every head maps template features ``zf`` and search features ``xf`` of the *same* B targets to
``cls (B, 2A, S, S)`` (channel ``k*A + a``: class k, 0 = background, 1 = foreground, anchor a)
and ``loc (B, 4A, S, S)`` (channel ``i*A + a``: dx, dy, dw, dh of anchor a). Correlations are
grouped convolutions, so each target correlates only with its own template.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["xcorr_depthwise", "xcorr_up", "DepthwiseXCorr", "DepthwiseRPN", "MultiRPN",
           "UPChannelRPN", "HEADS", "build_head"]


def xcorr_depthwise(x: Tensor, kernel: Tensor) -> Tensor:
    """Per-sample, per-channel correlation: ``x (B,C,H,W)``, ``kernel (B,C,k,k)`` ->
    ``(B, C, H-k+1, W-k+1)``."""
    b, c = kernel.shape[:2]
    if x.shape[:2] != (b, c):
        raise ValueError(f"xcorr_depthwise: search {tuple(x.shape)} and kernel "
                         f"{tuple(kernel.shape)} disagree on batch/channels")
    out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), kernel.reshape(b * c, 1, *kernel.shape[2:]),
                   groups=b * c)
    return out.reshape(b, c, *out.shape[2:])


def xcorr_up(x: Tensor, kernel: Tensor) -> Tensor:
    """Up-channel correlation (PySOT ``xcorr_fast``): ``x (B,C,H,W)``, ``kernel (B, K*C, k, k)``
    with channel ``o*C + c`` = output o, input c -> ``(B, K, H-k+1, W-k+1)``."""
    b, c = x.shape[:2]
    if kernel.shape[0] != b or kernel.shape[1] % c:
        raise ValueError(f"xcorr_up: kernel {tuple(kernel.shape)} does not fit search "
                         f"{tuple(x.shape)}")
    k = kernel.shape[1] // c
    out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), kernel.reshape(b * k, c, *kernel.shape[2:]),
                   groups=b)
    return out.reshape(b, k, *out.shape[2:])


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DepthwiseXCorr(nn.Module):
    """3x3 conv+BN+ReLU on template and search (separate weights), depthwise correlation, then
    a 1x1 conv+BN+ReLU and a 1x1 conv (with bias) to ``out_channels``."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv_kernel = _conv_bn_relu(in_channels, hidden, kernel_size)
        self.conv_search = _conv_bn_relu(in_channels, hidden, kernel_size)
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1))

    def forward(self, kernel: Tensor, search: Tensor) -> Tensor:
        """``kernel (B,C,hz,wz)``, ``search (B,C,hx,wx)`` -> ``(B, out, hx-hz+1, wx-wz+1)``."""
        feature = xcorr_depthwise(self.conv_search(search), self.conv_kernel(kernel))
        return self.head(feature)


class DepthwiseRPN(nn.Module):
    """SiamRPN++ depthwise RPN: ``cls`` and ``loc`` :class:`DepthwiseXCorr` branches."""

    def __init__(self, anchor_num: int = 5, in_channels: int = 256, out_channels: int = 256):
        super().__init__()
        self.cls = DepthwiseXCorr(in_channels, out_channels, 2 * anchor_num)
        self.loc = DepthwiseXCorr(in_channels, out_channels, 4 * anchor_num)

    def forward(self, z_f: Tensor, x_f: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls(z_f, x_f), self.loc(z_f, x_f)


class MultiRPN(nn.Module):
    """One :class:`DepthwiseRPN` per level (``rpn2``, ``rpn3``, ...), fused by a softmax-weighted
    sum (``weighted``: parameters ``cls_weight``/``loc_weight``, ones at init) or a plain mean."""

    def __init__(self, anchor_num: int, in_channels: Sequence[int], weighted: bool = False):
        super().__init__()
        self.weighted = weighted
        self.num = len(in_channels)
        for i, c in enumerate(in_channels):
            self.add_module(f"rpn{i + 2}", DepthwiseRPN(anchor_num, c, c))
        if weighted:
            self.cls_weight = nn.Parameter(torch.ones(self.num))
            self.loc_weight = nn.Parameter(torch.ones(self.num))

    def forward(self, z_fs: Sequence[Tensor], x_fs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(z_fs) != self.num or len(x_fs) != self.num:
            raise ValueError(f"MultiRPN expects {self.num} feature levels, got {len(z_fs)} "
                             f"template and {len(x_fs)} search levels")
        outs = [getattr(self, f"rpn{i + 2}")(z, x) for i, (z, x) in enumerate(zip(z_fs, x_fs))]
        cls = torch.stack([o[0] for o in outs])
        loc = torch.stack([o[1] for o in outs])
        if self.weighted:
            wc = F.softmax(self.cls_weight, 0).view(-1, 1, 1, 1, 1)
            wl = F.softmax(self.loc_weight, 0).view(-1, 1, 1, 1, 1)
            return (cls * wc).sum(0), (loc * wl).sum(0)
        return cls.mean(0), loc.mean(0)


class UPChannelRPN(nn.Module):
    """Original SiamRPN / DaSiamRPN head: the template is lifted to ``2A`` (cls) and ``4A`` (loc)
    correlation kernels by 3x3 convs; ``loc`` gets a final 1x1 ``loc_adjust``. All convs have bias."""

    def __init__(self, anchor_num: int = 5, feature_in: int = 256):
        super().__init__()
        cls_out, loc_out = 2 * anchor_num, 4 * anchor_num
        self.template_cls_conv = nn.Conv2d(feature_in, feature_in * cls_out, 3)
        self.template_loc_conv = nn.Conv2d(feature_in, feature_in * loc_out, 3)
        self.search_cls_conv = nn.Conv2d(feature_in, feature_in, 3)
        self.search_loc_conv = nn.Conv2d(feature_in, feature_in, 3)
        self.loc_adjust = nn.Conv2d(loc_out, loc_out, 1)

    def forward(self, z_f: Tensor, x_f: Tensor) -> tuple[Tensor, Tensor]:
        cls = xcorr_up(self.search_cls_conv(x_f), self.template_cls_conv(z_f))
        loc = xcorr_up(self.search_loc_conv(x_f), self.template_loc_conv(z_f))
        return cls, self.loc_adjust(loc)


HEADS = {"DepthwiseRPN": DepthwiseRPN, "MultiRPN": MultiRPN, "UPChannelRPN": UPChannelRPN}


def build_head(name: str, **kwargs) -> nn.Module:
    """RPN head by PySOT ``RPN.TYPE`` name."""
    if name not in HEADS:
        raise ValueError(f"unknown RPN head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name](**kwargs)
