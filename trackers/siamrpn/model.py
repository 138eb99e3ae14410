"""The SiamRPN model: ``backbone`` -> optional ``neck`` -> ``rpn_head``, PySOT's ``ModelBuilder``
attribute names, so state_dict keys match PySOT (and, renamed, DaSiamRPN) checkpoints.

Inputs are float32 BGR 0..255 crops, NCHW, no normalisation. Batched per target: template
features for B targets, then B search crops give ``cls (B, 2A, S, S)``, ``loc (B, 4A, S, S)``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from .backbones import build_backbone
from .config import SiamRPNConfig, load_siamrpn_config
from .heads import build_head
from .neck import build_neck

__all__ = ["SiamRPN", "build_siamrpn"]

Features = Tensor | list[Tensor]


class SiamRPN(nn.Module):
    """Siamese RPN tracker network (SiamRPN / SiamRPN++ / DaSiamRPN, by config).

    Attributes ``backbone``, ``neck`` (None when the config has no neck) and ``rpn_head`` are
    named as in PySOT. ``anchor_num`` is A; ``cfg`` the :class:`SiamRPNConfig` it was built from.
    """

    def __init__(self, cfg: SiamRPNConfig):
        super().__init__()
        self.cfg = cfg
        self.anchor_num = cfg.anchor_num
        self.backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        self.neck = build_neck(cfg.neck, **cfg.neck_kwargs) if cfg.neck else None
        self.rpn_head = build_head(cfg.head, **cfg.head_kwargs)
        head_a = cfg.head_kwargs.get("anchor_num", self.anchor_num)
        if head_a != self.anchor_num:
            raise ValueError(f"config {cfg.name}: head anchor_num {head_a} != "
                             f"{self.anchor_num} anchors from ratios x scales")

    def _features(self, img: Tensor) -> Features:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"expected crops of shape (B, 3, H, W), got {tuple(img.shape)}")
        f = self.backbone(img)
        return self.neck(f) if self.neck is not None else f

    def template(self, z: Tensor) -> Features:
        """``z (B,3,Hz,Wz)`` exemplar crops -> template features (a tensor, or a list of tensors
        for multi-level models), batch B. Stateless: pass the result to :meth:`track`."""
        return self._features(z)

    def track(self, zf: Features, x: Tensor) -> tuple[Tensor, Tensor]:
        """``zf`` from :meth:`template` for B targets and ``x (B,3,Hx,Wx)`` search crops (target
        b's crop in row b) -> ``cls (B, 2A, S, S)`` logits, ``loc (B, 4A, S, S)`` anchor offsets."""
        xf = self._features(x)
        zb = (zf[0] if isinstance(zf, (list, tuple)) else zf).shape[0]
        if zb != x.shape[0]:
            raise ValueError(f"track: {zb} templates but {x.shape[0]} search crops")
        return self.rpn_head(zf, xf)

    def forward(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: ``z (B,3,Hz,Wz)``, ``x (B,3,Hx,Wx)`` -> ``(cls, loc)`` as :meth:`track`."""
        return self.track(self.template(z), x)


def build_siamrpn(cfg_or_name: SiamRPNConfig | str | os.PathLike, overrides: Any = ()) -> SiamRPN:
    """Build a :class:`SiamRPN` from a config, a config name in ``configs/`` (e.g.
    ``"siamrpn_alex_dwxcorr"``) or a YAML path, with optional ``a.b=value`` overrides."""
    if isinstance(cfg_or_name, SiamRPNConfig):
        if overrides:
            raise ValueError("overrides apply to a config name or path, not a built config")
        return SiamRPN(cfg_or_name)
    return SiamRPN(load_siamrpn_config(cfg_or_name, overrides))
