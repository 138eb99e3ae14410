"""Set-prediction loss: per-pair reference computation, DETR's formula, gradcheck, masks, edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou
from torchvision.ops import sigmoid_focal_loss as tv_focal

from deepmot.boxes import cxcywh_to_xyxy
from deepmot.losses import DetectionSetLoss, SetPredictionLoss
from deepmot.matching.types import Assignment, MatchInput

K = 4  # foreground classes


def _batch(seed: int, b=2, n=6, g=3, cls="focal", dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    c = K + 1 if cls == "ce" else K
    logits = torch.randn(b, n, c, generator=gen, dtype=dtype) * 2
    pred_boxes = torch.cat([torch.rand(b, n, 2, generator=gen, dtype=dtype) * 0.6 + 0.2,
                            torch.rand(b, n, 2, generator=gen, dtype=dtype) * 0.3 + 0.05], -1)
    gt_boxes = torch.cat([torch.rand(b, g, 2, generator=gen, dtype=dtype) * 0.6 + 0.2,
                          torch.rand(b, g, 2, generator=gen, dtype=dtype) * 0.3 + 0.05], -1)
    labels = torch.randint(0, K, (b, g), generator=gen)
    gt_mask = torch.ones(b, g, dtype=torch.bool)
    pred_mask = torch.ones(b, n, dtype=torch.bool)
    if g > 1:
        gt_mask[1, 0] = False  # a padded GT that is not a suffix
        labels[1, 0] = 99  # garbage at padded slots must be ignored
        gt_boxes[1, 0] = torch.tensor([0.0, 0.0, -1.0, 0.0], dtype=dtype)
    if n > 1:
        pred_mask[0, -1] = False
        pred_boxes[0, -1] = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=dtype)
    return logits, pred_boxes, labels, gt_boxes, gt_mask, pred_mask


def _soft_plan(seed, b, n, g, gt_mask, pred_mask):
    gen = torch.Generator().manual_seed(seed + 1)
    p = torch.rand(b, n, g + 1, generator=gen, dtype=torch.float64) ** 3
    p[..., :g] *= gt_mask[:, None, :]
    p = p / p.sum(-1, keepdim=True)
    return torch.where(pred_mask[..., None], p, torch.full_like(p, 7.0))  # garbage in masked rows


def _onehot_plan(b, n, g, gt_mask, pred_mask):
    p = torch.zeros(b, n, g + 1, dtype=torch.float64)
    p[..., g] = 1.0
    for bi in range(b):
        real = torch.nonzero(gt_mask[bi]).flatten().tolist()
        for i, j in enumerate(real):
            p[bi, i, g], p[bi, i, j] = 0.0, 1.0
    return p * pred_mask[..., None]


def _reference(loss: SetPredictionLoss, logits, pred_boxes, labels, gt_boxes, gt_mask, pred_mask, plan, ignore):
    """Straight per-(image, prediction, column) computation of the documented formula."""
    b, n, g1 = plan.shape
    g = g1 - 1
    s_cls = s_l1 = s_giou = 0.0
    pos = neg = 0.0
    for bi in range(b):
        for i in range(n):
            if not pred_mask[bi, i]:
                continue
            for j in range(g1):
                if j < g and not gt_mask[bi, j]:
                    continue
                w = plan[bi, i, j]
                if loss.cls == "ce":
                    y = labels[bi, j] if j < g else K
                    cls = F.cross_entropy(logits[bi, i][None], torch.tensor([int(y)])) * (1 if j < g else loss.eos_coef)
                else:
                    t = torch.zeros(K, dtype=logits.dtype)
                    if j < g:
                        t[labels[bi, j]] = 1
                    cls = tv_focal(logits[bi, i], t, alpha=loss.focal_alpha, gamma=loss.focal_gamma, reduction="sum")
                if ignore is None or not ignore[bi, i]:
                    s_cls = s_cls + w * cls
                    if j == g:
                        neg = neg + w
                if j < g:
                    pos = pos + w
                    s_l1 = s_l1 + w * (pred_boxes[bi, i] - gt_boxes[bi, j]).abs().sum()
                    gi = generalized_box_iou(cxcywh_to_xyxy(pred_boxes[bi, i])[None], cxcywh_to_xyxy(gt_boxes[bi, j])[None])
                    s_giou = s_giou + w * (1 - gi[0, 0])
    if loss.normalize == "num_gt":
        z_cls = z_box = max(1.0, float(gt_mask.sum()))
    elif loss.normalize == "num_pos":
        z_box = max(1.0, float(pos))
        z_cls = z_box + (loss.eos_coef if loss.cls == "ce" else 1.0) * neg
    else:
        z_cls = z_box = 1.0
    return s_cls / z_cls, s_l1 / z_box, s_giou / z_box


@pytest.mark.parametrize("cls", ["ce", "focal"])
@pytest.mark.parametrize("normalize", ["num_gt", "num_pos", "none"])
@pytest.mark.parametrize("soft", [True, False])
def test_value_equals_per_pair_computation(cls, normalize, soft):
    seed = 3 + soft
    logits, pb, lab, gb, gm, pm = _batch(seed, cls=cls)
    b, n, g = 2, 6, 3
    plan = _soft_plan(seed, b, n, g, gm, pm) if soft else _onehot_plan(b, n, g, gm, pm)
    ignore = torch.zeros(b, n, dtype=torch.bool)
    ignore[1, 4] = True
    crit = SetPredictionLoss(cls=cls, normalize=normalize, w_cls=2.0, w_l1=5.0, w_giou=3.0)
    out = crit(logits, pb, lab, gb, gm, plan, pred_mask=pm, ignore=ignore)
    ref_cls, ref_l1, ref_giou = _reference(crit, logits, pb, lab, gb, gm, pm, plan, ignore)
    torch.testing.assert_close(out["loss_cls"], torch.as_tensor(ref_cls, dtype=torch.float64))
    torch.testing.assert_close(out["loss_l1"], torch.as_tensor(ref_l1, dtype=torch.float64))
    torch.testing.assert_close(out["loss_giou"], torch.as_tensor(ref_giou, dtype=torch.float64))
    torch.testing.assert_close(out["loss"], 2 * out["loss_cls"] + 5 * out["loss_l1"] + 3 * out["loss_giou"])


def test_ce_one_hot_equals_detr_weighted_cross_entropy():
    """DETR: CE with weight 1 per class and eos_coef for no-object, weighted mean over all queries."""
    logits, pb, lab, gb, _, _ = _batch(5, cls="ce")
    b, n, g = 2, 6, 3
    gm, pm = torch.ones(b, g, dtype=torch.bool), torch.ones(b, n, dtype=torch.bool)
    lab[1, 0], gb[1, 0] = 2, gb[0, 0]  # make the padded slot a real GT
    plan = _onehot_plan(b, n, g, gm, pm)
    out = SetPredictionLoss(cls="ce", eos_coef=0.1)(logits, pb, lab, gb, gm, plan)
    target = torch.full((b, n), K)
    target[:, :g] = lab
    weight = torch.ones(K + 1, dtype=torch.float64)
    weight[K] = 0.1
    ref = F.cross_entropy(logits.transpose(1, 2), target, weight=weight)
    torch.testing.assert_close(out["loss_cls"], ref)
    l1 = F.l1_loss(pb[:, :g], gb, reduction="sum") / (b * g)
    torch.testing.assert_close(out["loss_l1"], l1)


@pytest.mark.parametrize("cls", ["ce", "focal"])
def test_gradcheck_fixed_plan(cls):
    logits, pb, lab, gb, gm, pm = _batch(11, b=2, n=4, g=2, cls=cls)
    plan = _soft_plan(11, 2, 4, 2, gm, pm)
    crit = SetPredictionLoss(cls=cls, normalize="num_pos")
    logits.requires_grad_(True)
    pb.requires_grad_(True)
    gb.requires_grad_(True)

    def f(x, p, gt):
        return crit(x, p, lab, gt, gm, plan, pred_mask=pm)["loss"]

    assert torch.autograd.gradcheck(f, (logits, pb, gb))


def test_masked_entries_get_zero_gradient_even_with_garbage():
    logits, pb, lab, gb, gm, pm = _batch(13)
    logits[0, -1] = float("nan")  # masked prediction
    plan = _soft_plan(13, 2, 6, 3, gm, pm)
    logits.requires_grad_(True)
    pb.requires_grad_(True)
    gb.requires_grad_(True)
    out = SetPredictionLoss(cls="focal")(logits, pb, lab, gb, gm, plan, pred_mask=pm)
    out["loss"].backward()
    for t in (logits.grad, pb.grad, gb.grad):
        assert torch.isfinite(t).all()
    assert torch.all(logits.grad[0, -1] == 0) and torch.all(pb.grad[0, -1] == 0)
    assert torch.all(gb.grad[1, 0] == 0)


def test_hard_negative_mining_keeps_top_ratio_negatives():
    logits, pb, lab, gb, gm, pm = _batch(17, b=2, n=12, g=2, cls="ce")
    plan = _onehot_plan(2, 12, 2, gm, pm)
    ratio = 2.0
    out = SetPredictionLoss(cls="ce", normalize="num_pos", neg_pos_ratio=ratio)(logits, pb, lab, gb, gm, plan,
                                                                              pred_mask=pm)
    total = 0.0
    npos = 0
    for bi in range(2):
        rows = torch.nonzero(pm[bi]).flatten()
        is_pos = plan[bi, rows, :2].sum(-1) > 0
        ce_all = F.cross_entropy(logits[bi, rows], torch.full((len(rows),), K), reduction="none") * 0.1
        neg_losses = torch.sort(ce_all[~is_pos], descending=True).values
        k = int(ratio * int(is_pos.sum()))
        target = plan[bi, rows, :2].argmax(-1)
        pos_ce = F.cross_entropy(logits[bi, rows][is_pos], lab[bi][target[is_pos]], reduction="sum")
        total = total + pos_ce + neg_losses[:k].sum()
        npos += int(is_pos.sum())
    torch.testing.assert_close(out["loss_cls"], total / npos)


def test_no_gt_and_no_predictions():
    logits, pb, _, _, _, _ = _batch(19, g=0)
    lab, gb, gm = torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 4, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.bool)
    plan = torch.zeros(2, 6, 1, dtype=torch.float64)
    plan[..., 0] = 1
    pb.requires_grad_(True)
    out = SetPredictionLoss(cls="focal")(logits, pb, lab, gb, gm, plan)
    assert out["loss_l1"] == 0 and out["loss_giou"] == 0 and out["loss_cls"] > 0
    out["loss"].backward()
    assert pb.grad is not None and torch.all(pb.grad == 0)
    ref = tv_focal(logits, torch.zeros_like(logits), reduction="sum")  # all background, normalised by max(1, 0)
    torch.testing.assert_close(out["loss_cls"], ref)
    empty = SetPredictionLoss(cls="ce")(torch.zeros(1, 0, K + 1), torch.zeros(1, 0, 4), torch.zeros(1, 2, dtype=torch.int64),
                                        torch.full((1, 2, 4), 0.5), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 0, 3))
    assert empty["loss"] == 0


def test_bad_inputs_raise():
    logits, pb, lab, gb, gm, pm = _batch(23)
    plan = _onehot_plan(2, 6, 3, gm, pm)
    crit = SetPredictionLoss(cls="focal")
    bad = pb.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="pred_boxes"):
        crit(logits, bad, lab, gb, gm, plan, pred_mask=pm)
    bad_lab = lab.clone()
    bad_lab[0, 0] = K
    with pytest.raises(ValueError, match="gt_labels"):
        crit(logits, pb, bad_lab, gb, gm, plan, pred_mask=pm)
    with pytest.raises(ValueError, match="plan"):
        crit(logits, pb, lab, gb, gm, plan[..., :-1], pred_mask=pm)
    bad_gt = gb.clone()
    bad_gt[0, 1, 2] = 0.0
    with pytest.raises(ValueError, match="gt_boxes"):
        crit(logits, pb, lab, bad_gt, gm, plan, pred_mask=pm)


class _FirstPredsMatcher:
    """Toy matcher: GT j <- prediction j (one-hot), enough to test the wiring."""

    def __call__(self, inp: MatchInput, cost=None) -> Assignment:
        b, n, g = inp.batch_size, inp.num_preds, inp.num_gt
        plan = _onehot_plan(b, n, g, inp.gt_mask, inp.valid_preds()).float()
        return Assignment(plan=plan, gt_mask=inp.gt_mask, pred_mask=inp.valid_preds())


def test_detection_set_loss_runs_matcher_and_scores_its_plan():
    logits, pb, lab, gb, gm, pm = _batch(29, cls="focal")
    inp = MatchInput(logits, pb, lab, gb, gm, pred_mask=pm)
    out = DetectionSetLoss(_FirstPredsMatcher(), cls="focal")(inp)
    direct = SetPredictionLoss(cls="focal")(logits, pb, lab, gb, gm, out["assignment"].plan, pred_mask=pm)
    torch.testing.assert_close(out["loss"], direct["loss"])
    assert isinstance(out["assignment"], Assignment)


@pytest.mark.parametrize("plan_name", ["balanced", "unbalanced_tau2_0.1", "hungarian"])
def test_plan_weighted_loss_equals_uotod_detection_loss(fixtures_dir, plan_name):
    """uotod's DetectionLoss (reference run): cross-entropy with background class *first*, loc = 5 L1 + 2 (1 - GIoU)
    on xyxy boxes, reduction 'mean' = our "num_pos" normalisation with background weight 1."""
    import numpy as np

    from deepmot.losses import plan_weighted_loss

    z = np.load(fixtures_dir / "matchers" / "ot.npz")
    c = "batch2_padded_ng3_5/"
    logits = torch.tensor(z[c + "pred_logits"], dtype=torch.float64)
    pb = torch.tensor(z[c + "pred_boxes_xyxy"], dtype=torch.float64)
    labels = torch.tensor(z[c + "tgt_labels"]).long()
    tb = torch.tensor(z[c + "tgt_boxes_xyxy"], dtype=torch.float64)
    mask = torch.tensor(z[c + "tgt_mask"]).bool()
    plan = torch.tensor(z[c + "plan_" + plan_name], dtype=torch.float64)
    b, n, k = logits.shape
    g = labels.shape[1]
    logp = torch.log_softmax(logits, -1)
    cls = torch.cat([-logp.gather(-1, labels[:, None, :].expand(b, n, g)), -logp[..., :1]], -1)
    l1 = (pb[:, :, None] - tb[:, None]).abs().sum(-1)
    safe = torch.where(mask[..., None], tb, torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    giou = torch.stack([1 - generalized_box_iou(pb[i], safe[i]) for i in range(b)])
    out = plan_weighted_loss(plan, cls, {"loc": 5 * l1 + 2 * giou}, gt_mask=mask, normalize="num_pos")
    ref = float(z[c + "detection_loss_" + plan_name])
    assert (out["loss_cls"] + out["loss_loc"]).item() == pytest.approx(ref, abs=2e-5)


@pytest.mark.parametrize("cls", ["rs", "brs", "ap", "bap"])
def test_ranking_classification_equals_manual_composition(cls):
    from deepmot.boxes import box_iou
    from deepmot.losses import ap_loss, rank_sort_loss

    logits, pb, lab, gb, gm, pm = _batch(31, b=2, n=8, g=3, cls="focal")
    plan = _onehot_plan(2, 8, 3, gm, pm)
    logits.requires_grad_(True)
    out = SetPredictionLoss(cls=cls, self_balance=True)(logits, pb, lab, gb, gm, plan, pred_mask=pm)
    # manual: per (prediction, class) target = IoU with its GT (rs/brs) or 1 (ap/bap); masked rows ignored
    targets = torch.zeros(2, 8, K, dtype=torch.float64)
    for bi in range(2):
        for i in range(8):
            if not pm[bi, i]:
                targets[bi, i] = -1
                continue
            for j in range(3):
                if gm[bi, j] and plan[bi, i, j] > 0:
                    iou = box_iou(cxcywh_to_xyxy(pb[bi, i])[None], cxcywh_to_xyxy(gb[bi, j])[None])[0, 0]
                    targets[bi, i, lab[bi, j]] = iou if cls in ("rs", "brs") else 1.0
    if cls in ("rs", "brs"):
        want = sum(rank_sort_loss(logits.detach(), targets, bucketed=cls == "brs"))
    elif cls == "ap":
        want = ap_loss(logits.detach(), targets)
    else:
        want = ap_loss(logits.detach(), targets, bucketed=True, interpolated=False, self_term=None)
    torch.testing.assert_close(out["loss_cls"].detach(), want)
    assert 5 * out["loss_l1"] + 2 * out["loss_giou"] > 0
    torch.testing.assert_close(out["loss"].detach(), 2 * want)  # self-balanced: box terms scaled to equal loss_cls
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and abs(logits.grad.sum().item()) < 1e-9


@pytest.mark.parametrize("name", ["hungarian", "ot", "deta_stage1"])
def test_detection_set_loss_with_project_matchers(name):
    """Any project matcher feeds the set loss: finite loss and gradients; Hungarian / balanced OT
    send exactly one unit of mass to every real GT (num_pos = #GT)."""
    from deepmot.matching import build_matcher

    logits, pb, lab, gb, gm, _ = _batch(37, b=2, n=12, g=3, cls="focal", dtype=torch.float32)
    logits.requires_grad_(True)
    pb.requires_grad_(True)
    out = DetectionSetLoss(build_matcher(name), cls="focal")(MatchInput(logits, pb, lab, gb, gm))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(logits.grad).all() and torch.isfinite(pb.grad).all()
    if name in ("hungarian", "ot"):
        assert out["num_pos"].item() == pytest.approx(float(gm.sum()), abs=1e-3)
