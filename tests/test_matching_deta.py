"""DETA IoU assigner: the released code's behaviour in compat mode, the paper's rule otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmot.matching import IoUAssigner, MatchInput
from deepmot.matching.costs import pairwise_iou_cxcywh
from deepmot.matching.deta import assign_single, iou_labels

CASES = ["jitter_5gt_300", "small_and_large_8gt_900", "nested_2gt_double_assignment",
         "far_low_quality_3gt_100", "no_gt_100", "few_preds_3_lt_k4"]
STAGES = {"stage1": dict(pos_thr=0.7, neg_thr=0.3, num_samples=256, pos_fraction=0.5),
          "stage2": dict(pos_thr=0.6, neg_thr=None, num_samples=300, pos_fraction=0.25)}


@pytest.fixture(scope="module")
def dz(fixtures_dir):
    return np.load(fixtures_dir / "matchers" / "deta.npz")


@pytest.mark.parametrize("case", CASES)
def test_iou_is_torchvision_of_stored_boxes(dz, case):
    k = case + "/"
    iou = pairwise_iou_cxcywh(torch.tensor(dz[k + "pred_boxes_cxcywh"])[None], torch.tensor(dz[k + "gt_boxes_cxcywh"])[None])
    np.testing.assert_allclose(iou[0].T.numpy(), dz[k + "iou_gt_x_pred"], atol=1e-6)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stage", list(STAGES))
def test_compat_equals_released_code(dz, case, stage):
    k, p = case + "/", STAGES[stage]
    iou = torch.tensor(dz[k + "iou_gt_x_pred"])
    matches, labels = iou_labels(iou, p["pos_thr"], p["neg_thr"], True, compat=True)
    np.testing.assert_array_equal(matches.numpy(), dz[f"{k}{stage}_matcher_matches"])
    np.testing.assert_array_equal(labels.numpy(), dz[f"{k}{stage}_matcher_labels"])
    if f"{k}{stage}_pos_pred" not in dz:  # the reference crashed (Np < k); we use k_eff = min(k, Np)
        pp, pg, _ = assign_single(iou, pos_thr=p["pos_thr"], neg_thr=p["neg_thr"], balancing="deta_code")
        assert pp.numel() == int((labels == 1).sum())
        return
    pp, pg, ign = assign_single(iou, pos_thr=p["pos_thr"], neg_thr=p["neg_thr"], balancing="deta_code")
    np.testing.assert_array_equal(pp.numpy(), dz[f"{k}{stage}_topk_all_pos_pred"])
    np.testing.assert_array_equal(pg.numpy(), dz[f"{k}{stage}_topk_all_pos_gt"])
    assert not ign.any()
    gen = torch.Generator().manual_seed(0)  # the reference seeded torch with 0 before each call
    pp, pg, _ = assign_single(iou, balancing="deta_code", generator=gen, **p)
    np.testing.assert_array_equal(pp.numpy(), dz[f"{k}{stage}_pos_pred"])
    np.testing.assert_array_equal(pg.numpy(), dz[f"{k}{stage}_pos_gt"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stage", list(STAGES))
def test_paper_mode_invariants(dz, case, stage):
    k, p = case + "/", STAGES[stage]
    iou = torch.tensor(dz[k + "iou_gt_x_pred"])
    pp, pg, ign = assign_single(iou, balancing="paper", **p)
    if iou.shape[0] == 0:
        assert pp.numel() == 0
        return
    best, arg = iou.max(0)
    assert len(set(pp.tolist())) == pp.numel()  # never two GTs
    np.testing.assert_array_equal(pg.numpy(), arg[pp].numpy())  # a prediction keeps its argmax GT
    assert np.bincount(pg.numpy(), minlength=iou.shape[0]).max() <= 4
    assert pp.numel() <= int(p["num_samples"] * p["pos_fraction"])
    # every positive is above threshold or the closest prediction of its GT
    top = iou.max(1).values
    assert bool(((best[pp] >= p["pos_thr"]) | (iou[pg, pp] == top[pg])).all())
    assert not bool(ign[pp].any())
    if p["neg_thr"] is not None:  # the ignore band is ignored
        band = (best >= p["neg_thr"]) & (best < p["pos_thr"])
        assert bool(ign[band & ~torch.isin(torch.arange(iou.shape[1]), pp)].all())


def test_nested_case_shows_code_double_assignment(dz):
    iou = torch.tensor(dz["nested_2gt_double_assignment/iou_gt_x_pred"])
    code_p, _, _ = assign_single(iou, pos_thr=0.6, balancing="deta_code")
    paper_p, _, _ = assign_single(iou, pos_thr=0.6, balancing="paper")
    assert code_p.numel() > len(set(code_p.tolist()))  # one prediction serves two GTs in the code
    assert paper_p.numel() == len(set(paper_p.tolist()))


def test_matcher_batched_plan_and_sampling_cap(dz):
    k = "jitter_5gt_300/"
    pred = torch.tensor(dz[k + "pred_boxes_cxcywh"])
    gt = torch.tensor(dz[k + "gt_boxes_cxcywh"])
    g = gt.shape[0]
    gt_boxes = torch.stack([gt, torch.zeros_like(gt)])
    gt_mask = torch.tensor([[True] * g, [False] * g])
    inp = MatchInput(pred_logits=torch.zeros(2, 300, 2), pred_boxes=torch.rand(2, 300, 4) * 0.1 + 0.1,
                     gt_labels=torch.zeros(2, g, dtype=torch.int64), gt_boxes=gt_boxes, gt_mask=gt_mask,
                     ref_boxes=torch.stack([pred, pred]))
    a = IoUAssigner.deta_stage2(num_queries=300, balancing="deta_code", generator=torch.Generator().manual_seed(0))(inp)
    pr, gi = a.pairs()[0]
    order = np.lexsort((pr.numpy(), gi.numpy()))
    ref_p, ref_g = dz[k + "stage2_pos_pred"], dz[k + "stage2_pos_gt"]
    ref_order = np.lexsort((ref_p, ref_g))
    np.testing.assert_array_equal(pr.numpy()[order], ref_p[ref_order])
    np.testing.assert_array_equal(gi.numpy()[order], ref_g[ref_order])
    np.testing.assert_allclose(a.plan.sum(-1).numpy(), 1.0)
    assert a.pairs()[1][0].numel() == 0 and int(a.info["num_pos"][1]) == 0
    capped = IoUAssigner(pos_thr=0.3, max_pos_per_gt=None, pos_fraction=0.5, num_samples=8,
                         generator=torch.Generator().manual_seed(1))(inp)
    assert int(capped.info["num_pos"][0]) == 4
