"""The two trainable stages of Faster R-CNN (RPN on anchors, box head on proposals), with their
assignment taken from any :mod:`deepmot.matching` matcher and their loss from :mod:`deepmot.losses`.

Per stage and image, the predictions (objectness or class logits, decoded boxes) and the reference
boxes (anchors or proposals) become one padded :class:`~deepmot.matching.MatchInput` (normalised
cx, cy, w, h); the matcher returns an :class:`~deepmot.matching.Assignment` plan; the loss is
:class:`~deepmot.losses.SetPredictionLoss` on that plan (classification ``ce | bce | focal | rs | brs
| ap | bap``, boxes L1 + GIoU) or, for ``box_loss: smooth_l1``, torchvision's smooth-L1 on encoded
box deltas weighted by the same plan. ``matcher: aligned`` is the loss-aligned Hungarian
(:class:`~deepmot.matching.AssignmentAlignedLoss`), which is its own loss.

With ``matcher: iou`` (torchvision's IoU rule and positive/negative sampler, as an
:class:`~deepmot.matching.IoUAssigner`), ``cls_loss: ce`` (box head) / ``bce`` (RPN) and
``box_loss: smooth_l1`` the losses equal torchvision's own (``tests/test_detection_stages.py``).

Ignore regions (``targets[i]["ignore"]``, xyxy pixels: distractor classes and flag-0 boxes): a
prediction whose reference box lies in one (intersection over its own area >= ``ignore_ioa``) and
overlaps no GT at IoU >= ``pos_iou`` is masked out of matching and loss -- neither positive nor negative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import box_iou

from deepmot.boxes import xyxy_to_cxcywh
from deepmot.losses import SetPredictionLoss
from deepmot.matching import AssignmentAlignedLoss, Assignment, IoUAssigner, MatchInput, build_matcher, default_cost

__all__ = ["StageConfig", "StageLoss", "MatchedRPN", "MatchedRoIHeads", "MATCHER_NAMES", "CLS_LOSSES"]

MATCHER_NAMES = ("iou", "hungarian", "aligned", "deta_stage1", "deta_stage2", "ot", "uot")
CLS_LOSSES = ("ce", "bce", "focal", "rs", "brs", "ap", "bap")
BOX_LOSSES = ("smooth_l1", "l1_giou")


@dataclass
class StageConfig:
    """Assignment and loss of one stage (defaults: torchvision's box head).

    ``matcher``: iou | hungarian | aligned | deta_stage1 | deta_stage2 | ot | uot. ``iou``:
    ``pos_iou``, ``neg_iou`` (None = no ignore band), ``low_quality``, ``max_pos_per_gt`` (None = no
    cap) and the sampler (``samples`` per image at ``pos_fraction``; 0 = every prediction).
    ``deta_stage2`` samples ``samples`` at 0.25 with k=4 positives per GT (IoU 0.6); the cost
    matchers (hungarian, ot, uot) use DETA's cost with weights ``cost_cls / cost_l1 / cost_giou``.
    ``cls_loss``: ce (softmax, box head only; background weight ``eos_coef``) | bce (sigmoid) |
    focal | rs | brs | ap | bap. ``box_loss``: smooth_l1 (torchvision: encoded deltas, beta 1/9,
    sum over rows / number of rows) | l1_giou (``w_l1`` L1 + ``w_giou`` (1 - GIoU) on normalised
    cxcywh). ``self_balance``: RS-style box weight ``L_cls / L_box``. ``ignore_ioa``: see the module.
    """

    matcher: str = "iou"
    cls_loss: str = "ce"
    box_loss: str = "smooth_l1"
    pos_iou: float = 0.5
    neg_iou: float | None = None
    low_quality: bool = False
    max_pos_per_gt: int | None = None
    samples: int = 512
    pos_fraction: float = 0.25
    eos_coef: float = 1.0
    w_cls: float = 1.0
    w_box: float = 1.0
    w_l1: float = 5.0
    w_giou: float = 2.0
    cost_cls: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    self_balance: bool = False
    ignore_ioa: float = 0.5

    def __post_init__(self) -> None:
        for name, value, allowed in (("matcher", self.matcher, MATCHER_NAMES), ("cls_loss", self.cls_loss, CLS_LOSSES),
                                     ("box_loss", self.box_loss, BOX_LOSSES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.samples < 0 or not 0 < self.pos_fraction <= 1:
            raise ValueError("samples must be >= 0 and pos_fraction in (0, 1]")


def _matcher(cfg: StageConfig):
    """The :mod:`deepmot.matching` matcher of ``cfg`` (None for ``aligned``, which matches itself)."""
    n = cfg.samples or None
    if cfg.matcher == "iou":
        return IoUAssigner(cfg.pos_iou, cfg.neg_iou, low_quality=cfg.low_quality, max_pos_per_gt=cfg.max_pos_per_gt,
                           pos_fraction=cfg.pos_fraction if n else None, num_samples=n)
    if cfg.matcher == "deta_stage2":
        return build_matcher("deta_stage2", num_queries=n) if n else IoUAssigner(0.6, None, pos_fraction=None)
    if cfg.matcher == "deta_stage1":
        return build_matcher("deta_stage1")
    if cfg.matcher == "aligned":
        return None
    cls = "prob" if cfg.cls_loss == "ce" else "focal"
    return build_matcher(cfg.matcher, default_cost(cls, cfg.cost_cls, cfg.cost_l1, cfg.cost_giou))


def ioa(boxes: Tensor, regions: Tensor) -> Tensor:
    """(N, M) intersection of each xyxy box with each region over the box's own area (pixels)."""
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / area.clamp(min=1e-6)[:, None]


class StageLoss:
    """Assignment + loss of one stage for a padded batch.

    ``cfg``: :class:`StageConfig`; ``box_coder``: the stage's torchvision ``BoxCoder`` (delta encoding).
    ``timing`` accumulates seconds spent matching and in the loss (for benchmarks).
    """

    def __init__(self, cfg: StageConfig, box_coder, softmax_head: bool):
        if cfg.cls_loss == "ce" and not softmax_head:
            raise ValueError("cls_loss 'ce' needs a softmax head (the box head); "
                             "the RPN uses bce | focal | rs | brs | ap | bap")
        if cfg.matcher == "aligned" and not softmax_head:
            raise ValueError("matcher 'aligned' needs a softmax head (the box head)")
        self.cfg, self.box_coder, self.softmax = cfg, box_coder, softmax_head
        self.matcher = _matcher(cfg)
        self.needs_predictions = not isinstance(self.matcher, IoUAssigner)
        kind = "focal" if cfg.cls_loss == "bce" else cfg.cls_loss
        normalize = "num_gt" if cfg.cls_loss == "focal" else "num_pos"
        self.set_loss = SetPredictionLoss(
            cls=kind, eos_coef=cfg.eos_coef, focal_alpha=-1.0 if cfg.cls_loss == "bce" else 0.25,
            focal_gamma=0.0 if cfg.cls_loss == "bce" else 2.0, w_cls=1.0,
            w_l1=cfg.w_l1 if cfg.box_loss == "l1_giou" else 0.0,
            w_giou=cfg.w_giou if cfg.box_loss == "l1_giou" else 0.0,
            normalize=normalize, self_balance=False)
        self.aligned = AssignmentAlignedLoss(w_l1=cfg.w_l1, w_giou=cfg.w_giou, bg_weight=cfg.eos_coef,
                                             normalize="num_gt") if cfg.matcher == "aligned" else None
        self.timing = {"match": 0.0, "loss": 0.0}

    def match_input(self, logits: Tensor, boxes: Tensor, refs: Tensor, mask: Tensor, sizes: Tensor,
                    gt: list[Tensor], normalise: bool = True) -> MatchInput:
        """Padded batch -> :class:`MatchInput`.

        ``logits`` (B, Np, C) head logits in torchvision's order (background first for the box head,
        one objectness logit for the RPN); ``boxes``, ``refs`` (B, Np, 4) xyxy pixels (decoded
        predictions, anchors/proposals); ``mask`` (B, Np) bool; ``sizes`` (B, 2) image (h, w);
        ``gt`` per image (n, 4) xyxy pixels. Boxes become normalised cx, cy, w, h (``normalise=False``:
        pixel cx, cy, w, h, which keeps the exact IoU ties of integer anchors for the IoU assigners).
        """
        scale = sizes.flip(-1).repeat(1, 2).to(boxes.dtype)[:, None, :]  # (B, 1, 4): w, h, w, h
        if not normalise:
            scale = torch.ones_like(scale)
        if self.softmax:  # (B, Np, 2), torchvision's [background, person]
            softmax = self.cfg.cls_loss == "ce" or self.aligned is not None
            logits = logits[..., [1, 0]] if softmax else logits[..., 1:] - logits[..., :1]
        g = max((len(t) for t in gt), default=0)
        gt_boxes = boxes.new_zeros((len(gt), g, 4))
        gt_mask = torch.zeros((len(gt), g), dtype=torch.bool, device=boxes.device)
        for b, t in enumerate(gt):
            gt_boxes[b, : len(t)] = xyxy_to_cxcywh(t.to(boxes.dtype)) / scale[b]
            gt_mask[b, : len(t)] = True
        return MatchInput(logits, xyxy_to_cxcywh(boxes) / scale, torch.zeros_like(gt_mask, dtype=torch.int64),
                          gt_boxes, gt_mask, pred_mask=mask, ref_boxes=xyxy_to_cxcywh(refs) / scale)

    def mask_ignored(self, refs: Tensor, mask: Tensor, gt: list[Tensor], ignore: list[Tensor | None]) -> Tensor:
        """``mask`` with the predictions inside ignore regions (see the module docstring) turned off."""
        mask = mask.clone()
        for b, reg in enumerate(ignore):
            if reg is None or len(reg) == 0:
                continue
            inside = ioa(refs[b], reg.to(refs.dtype)).max(1).values >= self.cfg.ignore_ioa
            if len(gt[b]):
                inside &= box_iou(refs[b], gt[b].to(refs.dtype)).max(1).values < self.cfg.pos_iou
            mask[b] &= ~inside
        return mask

    def assign(self, inp: MatchInput) -> Assignment | None:
        """Run the matcher -> :class:`Assignment` (None for ``aligned``, whose loss matches itself)."""
        if self.aligned is not None:
            return None
        t0 = time.perf_counter()
        out = self.matcher(inp)
        self.timing["match"] += time.perf_counter() - t0
        return out

    def loss(self, inp: MatchInput, a: Assignment | None, deltas: Tensor, refs: Tensor,
             gt: list[Tensor]) -> tuple[Tensor, Tensor]:
        """-> ``(cls_loss, box_loss)`` 0-d tensors with gradient.

        ``deltas`` (B, Np, 4) the stage's predicted box deltas (for the pedestrian class), ``refs``
        (B, Np, 4) xyxy pixels, ``gt`` per image (n, 4) xyxy pixels.
        """
        t0 = time.perf_counter()
        cfg = self.cfg
        if self.aligned is not None:
            out = self.aligned(inp)
            cls, box = out["loss"], deltas.sum() * 0.0
        else:
            out = self.set_loss.from_assignment(inp, a)
            cls = out["loss_cls"]
            if cfg.box_loss == "smooth_l1":
                box = self._smooth_l1(a, deltas, refs, gt)
            else:
                box = cfg.w_l1 * out["loss_l1"] + cfg.w_giou * out["loss_giou"]
            if cfg.self_balance:
                box = box * (cls.detach() / box.detach().clamp(min=1e-12))
        self.timing["loss"] += time.perf_counter() - t0
        return cfg.w_cls * cls, cfg.w_box * box

    def _smooth_l1(self, a: Assignment, deltas: Tensor, refs: Tensor, gt: list[Tensor]) -> Tensor:
        """torchvision's box loss on the plan: ``sum_ij P_ij smoothL1(delta_i - encode(gt_j, ref_i))``
        (beta 1/9) over the rows that enter the classification loss, divided by their number."""
        b, n, _ = deltas.shape
        rows = a.pred_mask if a.ignore is None else a.pred_mask & ~a.ignore
        total = deltas.sum() * 0.0
        for k in range(b):
            g = len(gt[k])
            w = a.plan[k, :, :g] * rows[k, :, None]
            pi, gj = torch.nonzero(w > 0, as_tuple=True)
            if pi.numel():
                tgt = self.box_coder.encode_single(gt[k][gj].to(refs.dtype), refs[k, pi])
                sl1 = F.smooth_l1_loss(deltas[k, pi], tgt, beta=1 / 9, reduction="none").sum(-1)
                total = total + (w[pi, gj].to(sl1.dtype) * sl1).sum()
        return total / rows.sum().clamp(min=1)


def _pad(chunks: list[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """List of (n_b, ...) -> (B, max n_b, ...) padded with ``fill`` and a (B, max n_b) bool mask."""
    n = max((len(c) for c in chunks), default=0)
    out = chunks[0].new_full((len(chunks), n, *chunks[0].shape[1:]), fill)
    mask = torch.zeros((len(chunks), n), dtype=torch.bool, device=chunks[0].device)
    for b, c in enumerate(chunks):
        out[b, : len(c)] = c
        mask[b, : len(c)] = True
    return out, mask


_DUMMY = (0.0, 0.0, 1.0, 1.0)  # a valid xyxy box for padded rows


def _pad_boxes(chunks: list[Tensor]) -> tuple[Tensor, Tensor]:
    out, mask = _pad(chunks)
    return torch.where(mask[..., None], out, out.new_tensor(_DUMMY)), mask


class MatchedRPN(RegionProposalNetwork):
    """torchvision's RPN whose training assignment and loss come from a :class:`StageLoss`."""

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork, cfg: StageConfig) -> "MatchedRPN":
        """Re-class ``rpn`` in place (same head, anchors and parameters) with stage ``cfg``."""
        rpn.__class__ = cls
        rpn.stage = StageLoss(cfg, rpn.box_coder, softmax_head=False)
        return rpn

    def forward(self, images, features, targets=None):  # noqa: D102 (torchvision's signature)
        if not self.training:
            return super().forward(images, features, targets)
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        b = len(anchors)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(b, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_per_level)
        refs = torch.stack(anchors)
        logits, deltas = objectness.view(b, -1, 1), deltas.view(b, -1, 4)
        gt = [t["boxes"] for t in targets]
        mask = self.stage.mask_ignored(refs, torch.ones(refs.shape[:2], dtype=torch.bool, device=refs.device), gt,
                                       [t.get("ignore") for t in targets])
        sizes = torch.as_tensor(images.image_sizes, device=refs.device)
        decoded = self.box_coder.decode(deltas, anchors).view(b, -1, 4)
        inp = self.stage.match_input(logits, decoded, refs, mask, sizes, gt)
        a = self.stage.assign(inp if self.stage.needs_predictions else
                              self.stage.match_input(logits, decoded, refs, mask, sizes, gt, normalise=False))
        cls, box = self.stage.loss(inp, a, deltas, refs, gt)
        return boxes, {"loss_objectness": cls, "loss_rpn_box_reg": box}


class MatchedRoIHeads(RoIHeads):
    """torchvision's box head whose training assignment and loss come from a :class:`StageLoss`.

    Proposals get the GT boxes appended (as in torchvision). IoU matchers assign on the proposals
    alone, so the head runs only on the rows they keep (torchvision's sampling); the cost matchers
    need the predictions, so the head runs on every proposal first.
    """

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, cfg: StageConfig) -> "MatchedRoIHeads":
        """Re-class ``heads`` in place (same layers) with stage ``cfg``."""
        heads.__class__ = cls
        heads.stage = StageLoss(cfg, heads.box_coder, softmax_head=True)
        return heads

    def _predict(self, features, proposals: list[Tensor], image_shapes) -> tuple[Tensor, Tensor]:
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        return self.box_predictor(x)

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: D102 (torchvision's signature)
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        stage = self.stage
        gt = [t["boxes"].to(proposals[0].dtype) for t in targets]
        proposals = self.add_gt_proposals(proposals, gt)
        refs, padded = _pad_boxes(proposals)
        mask = stage.mask_ignored(refs, padded, gt, [t.get("ignore") for t in targets])
        sizes = torch.as_tensor(image_shapes, device=refs.device)
        if not stage.needs_predictions:  # assign on the proposals, run the head on the kept rows only
            inp = stage.match_input(refs.new_zeros(refs.shape[:2] + (2,)), refs, refs, mask, sizes, gt, normalise=False)
            a = stage.assign(inp)
            keep = a.pred_mask & ~a.ignore if a.ignore is not None else a.pred_mask
            proposals = [refs[b][keep[b]] for b in range(len(proposals))]
            refs, padded = _pad_boxes(proposals)
            mask = padded
            plan, _ = _pad([a.plan[b][keep[b]] for b in range(len(proposals))])
            a = Assignment(plan, a.gt_mask, mask, None, None, a.hard, a.info)
        logits, regression = self._predict(features, [p for p in proposals], image_shapes)
        counts = [len(p) for p in proposals]
        deltas = regression.view(len(regression), -1, 4)[:, 1]  # the pedestrian class's deltas
        logits, _ = _pad(list(logits.split(counts)))
        deltas, _ = _pad(list(deltas.split(counts)))
        decoded = self.box_coder.decode_single(deltas[padded], torch.cat(proposals))
        decoded, _ = _pad_boxes(list(decoded.split(counts)))
        inp = stage.match_input(logits, decoded, refs, mask, sizes, gt)
        if stage.needs_predictions:
            a = stage.assign(inp)
        cls, box = stage.loss(inp, a, deltas, refs, gt)
        return [], {"loss_classifier": cls, "loss_box_reg": box}
