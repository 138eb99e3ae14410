"""Set-prediction loss driven by any matcher's plan (DETR's set criterion, generalised).

A matcher returns a plan ``P`` of shape (B, Np, G+1) (last column = background); the loss is
the plan-weighted sum of per-pair training losses, so one-hot plans (Hungarian, DETA) give the
DETR / Deformable-DETR losses and soft plans (optimal transport) give uotod's ``DetectionLoss``:

* classification: ``L_cls = sum_{b,i,j} P_bij cls_bij`` where ``cls_bij`` is the loss of
  prediction ``i`` against GT ``j``'s class (``j < G``) or against background (``j = G``);
* boxes, on normalised ``cx, cy, w, h``: ``L_l1 = sum P_bij |b_i - b_j|_1`` and
  ``L_giou = sum P_bij (1 - GIoU(b_i, b_j))`` over GT columns only.

Normalisation (``normalize``): ``"num_gt"`` divides every term by ``max(1, #GT)``
(Deformable DETR); ``"num_pos"`` divides ``L_cls`` by the weighted plan mass
``N+ + w_bg N-`` (with ``N+ = max(1, sum of GT-column mass)``, ``N-`` the background mass and
``w_bg`` the background class weight; this is DETR's weighted cross-entropy mean) and the box
terms by ``N+`` (uotod); ``"none"`` returns sums. Hard-negative mining (``neg_pos_ratio``,
SSD-style): per image, background rows are ranked by ``P_i,bg * cls_i,bg`` and kept while the
background mass of the harder rows before them is below ``ratio * N+_b``; with mining,
``"num_pos"`` divides ``L_cls`` by ``N+`` only (uotod).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou

from deepmot.boxes import box_iou, cxcywh_to_xyxy
from deepmot.losses.focal import sigmoid_focal_loss
from deepmot.losses.ranking import ap_loss, rank_sort_loss
from deepmot.losses.ranking_heads import ranking_targets, self_balance_weight

if TYPE_CHECKING:  # only for annotations: the matcher half owns these types
    from deepmot.matching.types import Assignment, Matcher, MatchInput

__all__ = ["pairwise_cls_loss", "pairwise_box_losses", "plan_weighted_loss", "SetPredictionLoss",
           "DetectionSetLoss"]

ClsKind = Literal["ce", "focal", "rs", "brs", "ap", "bap"]
_RANKING = ("rs", "brs", "ap", "bap")
Normalize = Literal["num_gt", "num_pos", "none"]
#: A well-formed stand-in (normalised cxcywh) for padded GT / masked predictions, so that no
#: garbage ever enters a GIoU (whose gradient would be NaN on degenerate boxes).
_DUMMY_BOX = (0.5, 0.5, 1.0, 1.0)


def pairwise_cls_loss(pred_logits: Tensor, gt_labels: Tensor, *, kind: ClsKind = "focal", eos_coef: float = 0.1,
                      focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> Tensor:
    """Classification loss of every prediction against every GT class and background.

    ``pred_logits`` (B, Np, C): ``kind="ce"``: softmax over C = K+1 logits, background last,
    ``cls[..., j] = -log softmax[c_j]`` and ``cls[..., G] = -eos_coef * log softmax[K]``;
    ``kind="focal"``: C = K sigmoid logits, ``cls[..., j] = sum_k focal(x_k, onehot(c_j)_k)`` and
    ``cls[..., G] = sum_k focal(x_k, 0)``. ``gt_labels`` (B, G) int64 in [0, K). Returns (B, Np, G+1).
    """
    b, n, c = pred_logits.shape
    labels = gt_labels[:, None, :].expand(b, n, gt_labels.shape[1])
    if kind == "ce":
        logp = torch.log_softmax(pred_logits, dim=-1)
        cls_gt = -logp.gather(-1, labels)
        cls_bg = -eos_coef * logp[..., c - 1 : c]
    elif kind == "focal":
        f0 = sigmoid_focal_loss(pred_logits, torch.zeros_like(pred_logits), alpha=focal_alpha, gamma=focal_gamma)
        f1 = sigmoid_focal_loss(pred_logits, torch.ones_like(pred_logits), alpha=focal_alpha, gamma=focal_gamma)
        cls_bg = f0.sum(-1, keepdim=True)
        cls_gt = cls_bg + (f1 - f0).gather(-1, labels)  # only the GT's class switches its target to 1
    else:
        raise ValueError(f"kind must be 'ce' or 'focal', got {kind!r}")
    return torch.cat([cls_gt, cls_bg], dim=-1)


def pairwise_box_losses(pred_boxes: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(L1, 1 - GIoU)`` between (B, Np, 4) predictions and (B, G, 4) GT, both normalised cxcywh.

    Returns two (B, Np, G) tensors; L1 on cxcywh, GIoU on the xyxy conversion. Boxes must be
    non-degenerate (``w, h >= 0``; GIoU needs a positive union).
    """
    l1 = (pred_boxes[:, :, None, :] - gt_boxes[:, None, :, :]).abs().sum(-1)
    if gt_boxes.shape[1] == 0 or pred_boxes.shape[1] == 0:
        return l1, l1.clone()
    p, g = cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(gt_boxes)
    giou = torch.stack([generalized_box_iou(pi, gi) for pi, gi in zip(p, g)])
    return l1, 1.0 - giou


def _check_finite(name: str, x: Tensor, mask: Tensor) -> None:
    bad = ~torch.isfinite(x) & mask
    if bool(bad.any()):
        where = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s) at valid entries, first at index {where}")


def plan_weighted_loss(plan: Tensor, cls_loss: Tensor, box_losses: dict[str, Tensor], *, gt_mask: Tensor,
                       pred_mask: Tensor | None = None, ignore: Tensor | None = None, bg_weight: float = 1.0,
                       normalize: Normalize = "num_pos", neg_pos_ratio: float | None = None) -> dict[str, Tensor]:
    """Plan-weighted sums of per-pair losses, normalised (see the module docstring).

    ``plan`` (B, Np, G+1) (detached; rows of masked predictions and padded GT columns are ignored
    whatever they hold), ``cls_loss`` (B, Np, G+1), ``box_losses`` name -> (B, Np, G), ``gt_mask``
    (B, G) bool, ``pred_mask`` (B, Np) bool or None (all valid), ``ignore`` (B, Np) bool: rows left
    out of the classification loss (IoU ignore band). ``bg_weight``: background class weight in the
    ``"num_pos"`` normaliser (DETR's ``eos_coef`` for cross-entropy, 1 for focal).
    Returns ``{"loss_cls": ..., "loss_<name>": ..., "num_pos": N+ (unclamped), "num_gt": #GT}`` (scalars).
    """
    if normalize not in ("num_gt", "num_pos", "none"):
        raise ValueError(f"normalize must be 'num_gt', 'num_pos' or 'none', got {normalize!r}")
    if plan.shape != cls_loss.shape:
        raise ValueError(f"plan {tuple(plan.shape)} and cls_loss {tuple(cls_loss.shape)} differ")
    b, n, g1 = plan.shape
    if gt_mask.shape != (b, g1 - 1):
        raise ValueError(f"gt_mask has shape {tuple(gt_mask.shape)}, expected {(b, g1 - 1)}")
    if pred_mask is None:
        pred_mask = torch.ones((b, n), dtype=torch.bool, device=plan.device)
    col_ok = torch.cat([gt_mask.bool(), gt_mask.new_ones((b, 1), dtype=torch.bool)], dim=1)
    valid = pred_mask.bool()[:, :, None] & col_ok[:, None, :]
    plan = torch.where(valid, plan.detach().to(cls_loss.dtype), torch.zeros((), dtype=cls_loss.dtype,
                                                                            device=plan.device))
    pos_mass = plan[..., :-1].sum((1, 2))  # (B,)
    num_pos = pos_mass.sum()

    cls_plan = plan if ignore is None else plan * (~ignore.bool())[:, :, None]
    if neg_pos_ratio is not None:
        bg = cls_plan[..., -1]
        hardness = torch.where(bg > 0, bg * cls_loss[..., -1].detach(), torch.full_like(bg, -1.0))
        order = torch.sort(hardness, dim=1, descending=True, stable=True).indices
        bg_sorted = bg.gather(1, order)
        before = torch.cumsum(bg_sorted, dim=1) - bg_sorted  # background mass of harder rows
        keep_sorted = before < neg_pos_ratio * pos_mass[:, None]
        keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
        cls_plan = torch.cat([cls_plan[..., :-1], (bg * keep)[..., None]], dim=-1)
    zero = torch.zeros((), dtype=cls_loss.dtype, device=plan.device)
    sum_cls = torch.where(cls_plan > 0, cls_plan * cls_loss, zero).sum()
    sums = {k: torch.where(plan[..., :-1] > 0, plan[..., :-1] * v, zero).sum() for k, v in box_losses.items()}

    num_gt = gt_mask.sum().to(cls_loss.dtype)
    if normalize == "num_gt":
        z_cls = z_box = num_gt.clamp(min=1)
    elif normalize == "num_pos":
        z_box = num_pos.clamp(min=1)
        z_cls = z_box if neg_pos_ratio is not None else z_box + bg_weight * cls_plan[..., -1].sum()
        z_cls = z_cls.clamp(min=torch.finfo(cls_loss.dtype).tiny)
    else:
        z_cls = z_box = torch.ones((), dtype=cls_loss.dtype, device=plan.device)
    out = {"loss_cls": sum_cls / z_cls}
    out.update({f"loss_{k}": v / z_box for k, v in sums.items()})
    out["num_pos"], out["num_gt"] = num_pos.detach(), num_gt
    return out


class SetPredictionLoss(nn.Module):
    """Classification + L1 + GIoU set loss for a given plan (any matcher's :class:`Assignment`).

    ``cls``: "ce" (softmax, K+1 logits, background last; DETR) or "focal" (K sigmoid logits;
    Deformable DETR / DETA), both plan-weighted; or a ranking loss over all (prediction, class)
    sigmoid logits of the batch with targets from :func:`ranking_targets`: "rs" / "brs" (IoU of the
    detached predicted box with its GT as continuous label; ``loss_cls = L_rank + L_sort``), "ap" /
    "bap" (binary; "bap" is the released bucketed AP). ``ranking_delta``: None = the loss's default
    (0.5 for RS/BRS, 1 for AP/BAP). ``self_balance``: weight the box terms by
    ``loss_cls.detach() / box_loss.detach()`` (RS-style heads). Weights ``w_cls, w_l1, w_giou``
    (DETR: 1/5/2; Deformable DETR uses ``w_cls = 2``). ``normalize``: None picks "num_pos" for "ce"
    (DETR) and "num_gt" otherwise (Deformable DETR). ``neg_pos_ratio``: hard-negative mining ratio
    for "ce"/"focal" (None = off).
    """

    def __init__(self, *, cls: ClsKind = "focal", eos_coef: float = 0.1, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, w_cls: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0,
                 normalize: Normalize | None = None, neg_pos_ratio: float | None = None,
                 ranking_delta: float | None = None, self_balance: bool = False):
        super().__init__()
        if cls not in ("ce", "focal") + _RANKING:
            raise ValueError(f"cls must be one of ce, focal, rs, brs, ap, bap; got {cls!r}")
        if neg_pos_ratio is not None and neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.cls, self.eos_coef = cls, eos_coef
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.w_cls, self.w_l1, self.w_giou = w_cls, w_l1, w_giou
        self.normalize: Normalize = normalize or ("num_pos" if cls == "ce" else "num_gt")
        self.neg_pos_ratio = neg_pos_ratio
        self.ranking_delta, self.self_balance = ranking_delta, self_balance

    def forward(self, pred_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                gt_mask: Tensor, plan: Tensor, *, pred_mask: Tensor | None = None,
                ignore: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms for one batch.

        ``pred_logits`` (B, Np, C), ``pred_boxes`` (B, Np, 4) normalised cxcywh, ``gt_labels`` (B, G)
        int64, ``gt_boxes`` (B, G, 4) cxcywh, ``gt_mask`` (B, G) bool, ``plan`` (B, Np, G+1),
        ``pred_mask`` (B, Np) bool or None, ``ignore`` (B, Np) bool or None. Returns ``loss``
        (weighted total), ``loss_cls``, ``loss_l1``, ``loss_giou``, ``num_pos``, ``num_gt``.
        Masked predictions and padded GT get exactly zero gradient.
        """
        b, n, c = pred_logits.shape
        g = gt_labels.shape[1]
        if pred_boxes.shape != (b, n, 4) or gt_boxes.shape != (b, g, 4) or gt_mask.shape != (b, g):
            raise ValueError(f"shape mismatch: pred_logits {tuple(pred_logits.shape)}, pred_boxes "
                             f"{tuple(pred_boxes.shape)}, gt_labels {tuple(gt_labels.shape)}, gt_boxes "
                             f"{tuple(gt_boxes.shape)}, gt_mask {tuple(gt_mask.shape)}")
        if plan.shape != (b, n, g + 1):
            raise ValueError(f"plan has shape {tuple(plan.shape)}, expected {(b, n, g + 1)}")
        gt_mask = gt_mask.bool()
        pmask = torch.ones((b, n), dtype=torch.bool, device=pred_logits.device) if pred_mask is None \
            else pred_mask.bool()
        num_classes = c - 1 if self.cls == "ce" else c
        bad = gt_mask & ((gt_labels < 0) | (gt_labels >= num_classes))
        if bool(bad.any()):
            raise ValueError(f"gt_labels must lie in [0, {num_classes}) for real GT; got "
                             f"{gt_labels[bad].unique().tolist()}")
        _check_finite("pred_logits", pred_logits, pmask[..., None])
        _check_finite("pred_boxes", pred_boxes, pmask[..., None])
        _check_finite("gt_boxes", gt_boxes, gt_mask[..., None])
        if bool((gt_boxes[..., 2:] <= 0).any(-1)[gt_mask].any()):
            raise ValueError("gt_boxes must have positive width and height (normalised cx, cy, w, h)")
        if bool((pred_boxes[..., 2:] < 0).any(-1)[pmask].any()):
            raise ValueError("pred_boxes must have non-negative width and height (normalised cx, cy, w, h)")

        dummy = pred_boxes.new_tensor(_DUMMY_BOX)
        logits = torch.where(pmask[..., None], pred_logits, torch.zeros_like(pred_logits))
        pboxes = torch.where(pmask[..., None], pred_boxes, dummy)
        gboxes = torch.where(gt_mask[..., None], gt_boxes.to(pred_boxes.dtype), dummy)
        labels = torch.where(gt_mask, gt_labels, torch.zeros_like(gt_labels)).long()

        ranking = self.cls in _RANKING
        if ranking:  # classification comes from the ranking loss; plan-weight only the boxes
            cls = pboxes.new_zeros((b, n, g + 1))
        else:
            cls = pairwise_cls_loss(logits, labels, kind=self.cls, eos_coef=self.eos_coef,
                                    focal_alpha=self.focal_alpha, focal_gamma=self.focal_gamma)
        l1, giou = pairwise_box_losses(pboxes, gboxes)
        out = plan_weighted_loss(plan, cls, {"l1": l1, "giou": giou}, gt_mask=gt_mask, pred_mask=pmask,
                                 ignore=ignore, bg_weight=self.eos_coef if self.cls == "ce" else 1.0,
                                 normalize=self.normalize, neg_pos_ratio=None if ranking else self.neg_pos_ratio)
        if ranking:
            out.update(self._ranking_cls(logits, pboxes, gboxes, labels, gt_mask, pmask, plan, ignore))
        box = self.w_l1 * out["loss_l1"] + self.w_giou * out["loss_giou"]
        if self.self_balance:
            box = self_balance_weight(out["loss_cls"], box) * box
        out["loss"] = self.w_cls * out["loss_cls"] + box
        return out

    def _ranking_cls(self, logits: Tensor, pboxes: Tensor, gboxes: Tensor, labels: Tensor, gt_mask: Tensor,
                     pmask: Tensor, plan: Tensor, ignore: Tensor | None) -> dict[str, Tensor]:
        """Ranking classification terms over the batch's (B, Np, K) sigmoid logits."""
        iou = None
        if self.cls in ("rs", "brs"):
            with torch.no_grad():
                iou = box_iou(cxcywh_to_xyxy(pboxes.detach()), cxcywh_to_xyxy(gboxes))
        plan = torch.where(pmask[..., None], plan.detach().to(logits.dtype), torch.zeros((), dtype=logits.dtype))
        targets = ranking_targets(plan, labels, logits.shape[-1], iou=iou, gt_mask=gt_mask, pred_mask=pmask,
                                  ignore=ignore)
        if self.cls in ("rs", "brs"):
            delta = 0.5 if self.ranking_delta is None else self.ranking_delta
            rank, sort = rank_sort_loss(logits, targets, delta=delta, bucketed=self.cls == "brs")
            return {"loss_cls": rank + sort, "loss_rank": rank, "loss_sort": sort}
        delta = 1.0 if self.ranking_delta is None else self.ranking_delta
        if self.cls == "bap":
            return {"loss_cls": ap_loss(logits, targets, delta=delta, bucketed=True, interpolated=False, self_term=None)}
        return {"loss_cls": ap_loss(logits, targets, delta=delta)}

    def from_assignment(self, inp: "MatchInput", assignment: "Assignment") -> dict[str, Tensor]:
        """Loss of the predictions in ``inp`` under ``assignment`` (its plan, masks and ignore band)."""
        return self(inp.pred_logits, inp.pred_boxes, inp.gt_labels, inp.gt_boxes, assignment.gt_mask,
                    assignment.plan, pred_mask=assignment.pred_mask, ignore=assignment.ignore)


class DetectionSetLoss(nn.Module):
    """DETR's set criterion over any matcher: ``forward(inp)`` matches (no grad) then scores.

    ``matcher``: any :class:`deepmot.matching.Matcher`; remaining keyword arguments go to
    :class:`SetPredictionLoss`. Returns the loss dict plus ``"assignment"``.
    """

    def __init__(self, matcher: "Matcher", **loss_kwargs):
        super().__init__()
        self.matcher = matcher
        self.criterion = SetPredictionLoss(**loss_kwargs)

    def forward(self, inp: "MatchInput") -> dict:  # noqa: D102
        with torch.no_grad():
            assignment = self.matcher(inp)
        out = self.criterion.from_assignment(inp, assignment)
        out["assignment"] = assignment
        return out
