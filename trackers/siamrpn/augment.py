"""Template and search-crop augmentation of SiamRPN's DeepMOT fine-tuning (specs/deepmot.md §6.6,
with §8.16's fixes: salt is 255, luminance is a per-pixel offset in [-25, 24]): box scale jitter
of new templates, and luminance / blur / Gaussian noise / salt-and-pepper on template and search
crops (float32 BGR 0..255, NCHW). Every draw comes from the clip's ``torch.Generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["jitter_box_scale", "augment_crops"]


def jitter_box_scale(xywh: Tensor, prob: float, low: float, high: float,
                     gen: torch.Generator) -> Tensor:
    """With probability ``prob`` per box, scale width and height independently by U[low, high]
    about the centre. ``xywh (K, 4)`` float64 pixels -> same shape (a new tensor)."""
    out = xywh.clone()
    if xywh.shape[0] == 0 or prob <= 0:
        return out
    hit = torch.rand(xywh.shape[0], generator=gen) < prob
    f = low + (high - low) * torch.rand(xywh.shape[0], 2, generator=gen)
    f = torch.where(hit[:, None], f, torch.ones_like(f)).to(xywh.dtype)
    centre = xywh[:, :2] + xywh[:, 2:] / 2
    out[:, 2:] = xywh[:, 2:] * f
    out[:, :2] = centre - out[:, 2:] / 2
    return out


def _blur(x: Tensor, k: int) -> Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` (sigma from the kernel size, as OpenCV does)."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    r = torch.arange(k, dtype=x.dtype) - (k - 1) / 2
    w = torch.exp(-r ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (k // 2,) * 4, mode="replicate"), w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(y, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)[0]


def augment_crops(x: Tensor, prob: float, gen: torch.Generator) -> Tensor:
    """Photometric augmentation of crops ``(N, 3, H, W)`` float32 BGR 0..255 (DeepMOT's noise
    model): independently per crop and each with probability ``prob``: a per-pixel luminance
    offset in [-25, 24], a Gaussian blur (kernel 3 or 5), and either Gaussian noise (variance
    U[10, 30]) or salt-and-pepper (amount 0.004). Returns a new tensor clipped to [0, 255]."""
    if prob <= 0 or x.shape[0] == 0:
        return x
    out = x.detach().clone()
    n, _, h, w = out.shape
    draws = torch.rand(n, 6, generator=gen)
    for i in range(n):
        img = out[i]
        if draws[i, 0] < prob:
            img = img + torch.randint(-25, 25, (1, h, w), generator=gen).to(img.dtype)
        if draws[i, 1] < prob:
            img = _blur(img, 3 if draws[i, 2] < 0.5 else 5)
        if draws[i, 3] < prob:
            if draws[i, 4] < 0.5:
                var = 10 + 20 * float(draws[i, 5])
                img = img + var ** 0.5 * torch.randn(img.shape, generator=gen)
            else:
                u = torch.rand(1, h, w, generator=gen)
                img = torch.where(u < 0.002, torch.zeros_like(img), img)
                img = torch.where(u > 1 - 0.002, torch.full_like(img, 255.0), img)
        out[i] = img.clamp(0, 255)
    return out
