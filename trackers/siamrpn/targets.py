"""SiamRPN training targets and loss (PySOT ``AnchorTarget`` and ``loss.py``, spec §7.2-7.3).

Anchors of a training search crop of side X: the tracker's grid (:mod:`.anchors`) around the
crop centre ``X // 2``. Per pair, an anchor is positive if its IoU with the target exceeds
``thr_high``, negative below ``thr_low``, ignored (-1) otherwise; at most ``pos_num`` random
positives and ``total_num - pos_num`` random negatives are kept. Negative pairs (the search
object is another one) only label up to ``neg_num`` anchors of the 7x7 cells around the target's
cell as negatives. Regression targets ``dx = (tcx - acx) / aw``, ``dy``, ``dw = log(tw / aw)``,
``dh``; weight ``1 / num_pos`` on positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmot.boxes import box_iou, cxcywh_to_xyxy

from .anchors import anchor_grid
from .config import SiamRPNConfig

__all__ = ["AnchorTargets", "training_anchors", "anchor_targets", "mine_hard_negatives", "rpn_loss"]


@dataclass
class AnchorTargets:
    """``label_cls (B, A, S, S)`` int64 in {-1, 0, 1}; ``label_loc (B, 4, A, S, S)`` float32;
    ``label_loc_weight (B, A, S, S)`` float32 (``1/num_pos`` on positives, else 0)."""

    label_cls: Tensor
    label_loc: Tensor
    label_loc_weight: Tensor


def training_anchors(cfg: SiamRPNConfig) -> Tensor:
    """Anchors of the training search crop: ``(A*S*S, 4)`` float32 ``cx, cy, w, h`` in crop pixels
    (rows ordered anchor, y, x; ``S = cfg.train_score_size``)."""
    s = cfg.train_score_size
    grid = anchor_grid(s, cfg.anchor_stride, cfg.anchor_ratios, cfg.anchor_scales, "pysot")
    out = torch.from_numpy(grid).clone()
    out[:, :2] += cfg.train.search_size // 2
    return out


def anchor_targets(target: Tensor, positive: Tensor, cfg: SiamRPNConfig,
                   generator: torch.Generator | None = None) -> AnchorTargets:
    """Targets for B pairs: ``target (B, 4)`` ``cx, cy, w, h`` crop pixels, ``positive (B,)`` bool.
    Random subsets use ``generator``."""
    t = cfg.train
    a, s = cfg.anchor_num, cfg.train_score_size
    anchors = training_anchors(cfg)                                       # (K, 4)
    k = anchors.shape[0]
    b = target.shape[0]
    target = target.to(torch.float32)
    iou = box_iou(cxcywh_to_xyxy(anchors), cxcywh_to_xyxy(target)).T      # (B, K)
    loc = torch.stack([(target[:, None, 0] - anchors[None, :, 0]) / anchors[None, :, 2],
                       (target[:, None, 1] - anchors[None, :, 1]) / anchors[None, :, 3],
                       torch.log(target[:, None, 2] / anchors[None, :, 2]),
                       torch.log(target[:, None, 3] / anchors[None, :, 3])], dim=1)  # (B, 4, K)
    cls = torch.full((b, k), -1, dtype=torch.int64)
    weight = torch.zeros(b, k)
    origin = t.search_size // 2 - (s // 2) * cfg.anchor_stride
    cell_x = ((anchors[:, 0] - origin) / cfg.anchor_stride).round()
    cell_y = ((anchors[:, 1] - origin) / cfg.anchor_stride).round()

    def pick(idx: Tensor, n: int) -> Tensor:
        if idx.numel() <= n:
            return idx
        return idx[torch.randperm(idx.numel(), generator=generator)[:n]]

    for i in range(b):
        if bool(positive[i]):
            pos = pick(torch.nonzero(iou[i] > t.thr_high).flatten(), t.pos_num)
            neg = pick(torch.nonzero(iou[i] < t.thr_low).flatten(), t.total_num - t.pos_num)
            cls[i, pos] = 1
            cls[i, neg] = 0
            if pos.numel():
                weight[i, pos] = 1.0 / (pos.numel() + 1e-6)
        else:
            tx = ((target[i, 0] - origin) / cfg.anchor_stride).round()
            ty = ((target[i, 1] - origin) / cfg.anchor_stride).round()
            near = (cell_x - tx).abs().le(3) & (cell_y - ty).abs().le(3)
            neg = pick(torch.nonzero(near).flatten(), t.neg_num)
            cls[i, neg] = 0
    return AnchorTargets(cls.view(b, a, s, s), loc.view(b, 4, a, s, s).contiguous(),
                         weight.view(b, a, s, s))


@torch.no_grad()
def mine_hard_negatives(cls: Tensor, targets: AnchorTargets, target: Tensor, positive: Tensor,
                        cfg: SiamRPNConfig, k: int) -> AnchorTargets:
    """Online hard-negative anchor mining: per pair, label as negative (0) the ``k`` anchors
    with the highest foreground log-odds among those still ignored (-1) that are certainly
    background: IoU with the target below ``thr_low`` in a positive pair, any anchor in a
    negative pair (its search object is another one). ``cls (B, 2A, S, S)`` logits of the
    current forward pass; ``target``/``positive`` as for :func:`anchor_targets`. Returns new
    targets (the input is not changed); ``k = 0`` returns them as they are."""
    if k <= 0:
        return targets
    b, _, h, w = cls.shape
    a = targets.label_cls.shape[1]
    odds = cls.detach().view(b, 2, a, h, w).float()
    odds = (odds[:, 1] - odds[:, 0]).reshape(b, -1).cpu()                 # (B, K)
    anchors = training_anchors(cfg)
    iou = box_iou(cxcywh_to_xyxy(anchors), cxcywh_to_xyxy(target.to(torch.float32))).T
    pool = (iou < cfg.train.thr_low) | ~positive.view(-1, 1).bool()
    label = targets.label_cls.reshape(b, -1).clone()
    pool &= label == -1
    odds = odds.masked_fill(~pool, float("-inf"))
    top = odds.topk(min(k, odds.shape[1]), dim=1)
    rows = torch.arange(b).view(-1, 1).expand_as(top.indices)
    keep = torch.isfinite(top.values)
    label[rows[keep], top.indices[keep]] = 0
    return AnchorTargets(label.view_as(targets.label_cls), targets.label_loc,
                         targets.label_loc_weight)


def rpn_loss(cls: Tensor, loc: Tensor, targets: AnchorTargets, cls_weight: float = 1.0,
             loc_weight: float = 1.2) -> tuple[Tensor, Tensor, Tensor]:
    """PySOT's SiamRPN loss for ``cls (B, 2A, S, S)`` logits and ``loc (B, 4A, S, S)``:
    ``0.5 * NLL(positives) + 0.5 * NLL(negatives)`` (means over the batch's selected anchors; an
    empty set adds 0) and the weighted L1 ``sum(|loc - target| * w) / B``. Returns
    ``(total, cls_loss, loc_loss)``."""
    b, _, h, w = cls.shape
    a = targets.label_cls.shape[1]
    logp = F.log_softmax(cls.view(b, 2, a, h, w), dim=1)                 # (B, 2, A, S, S)
    label = targets.label_cls.to(cls.device)

    def nll(value: int) -> Tensor:
        mask = label == value
        if not bool(mask.any()):
            return cls.sum() * 0.0
        return -logp[:, value][mask].mean()

    cls_loss = 0.5 * nll(1) + 0.5 * nll(0)
    diff = (loc.view(b, 4, a, h, w) - targets.label_loc.to(loc.device)).abs().sum(dim=1)
    loc_loss = (diff * targets.label_loc_weight.to(loc.device)).sum() / b
    return cls_weight * cls_loss + loc_weight * loc_loss, cls_loss, loc_loss
