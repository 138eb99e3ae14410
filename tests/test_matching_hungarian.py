"""Hungarian / closest matchers against DETR, DETA and scipy reference outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deepmot.matching import (
    ClassProbCost,
    ClosestGTMatcher,
    ClosestPredMatcher,
    CompositeCost,
    FocalClassCost,
    GIoUCost,
    HungarianMatcher,
    L1BoxCost,
    MatchInput,
    gated_linear_assignment,
)
from deepmot.matching.base import cost_only_input

CASES = ["np10_ng3", "np100_ng7", "np300_ng20", "np300_ng100", "np5_ng5", "np4_ng9", "np10_ng0"]
COSTS = {
    "detr": lambda: CompositeCost([ClassProbCost(1.0), L1BoxCost(5.0), GIoUCost(2.0, offset=0.0)]),
    "deta_focal": lambda: CompositeCost([FocalClassCost(2.0), L1BoxCost(5.0), GIoUCost(2.0, offset=0.0)]),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hz(fixtures_dir):
    return np.load(fixtures_dir / "matchers" / "hungarian.npz")


def _inp(z, k, suffix=""):
    return MatchInput.from_lists(torch.tensor(z[k + "pred_logits"]), torch.tensor(z[k + "pred_boxes_cxcywh"]),
                                 [dict(labels=torch.tensor(z[k + "tgt_labels" + suffix]),
                                       boxes=torch.tensor(z[k + "tgt_boxes_cxcywh" + suffix]))])


@pytest.mark.parametrize("kind", list(COSTS))
@pytest.mark.parametrize("case", CASES)
def test_costs_and_assignment_equal_reference(hz, kind, case):
    k = f"{kind}/{case}/"
    cost_fn = COSTS[kind]()
    inp = _inp(hz, k)
    cost = cost_fn(inp)
    np.testing.assert_allclose(cost[0, :, :-1].numpy(), hz[k + "cost"], rtol=1e-6, atol=1e-6)
    a = HungarianMatcher(cost_fn)(inp)
    rows, cols = a.pairs()[0]
    np.testing.assert_array_equal(rows.numpy(), hz[k + "rows"])
    np.testing.assert_array_equal(cols.numpy(), hz[k + "cols"])
    np.testing.assert_array_equal(a.pred_to_gt()[0].numpy(), hz[k + "pred_to_gt"])
    n_gt = hz[k + "tgt_labels"].shape[0]
    assert int(a.info["num_unmatched_gt"][0]) == n_gt - len(hz[k + "rows"])
    total = float(torch.tensor(hz[k + "cost"])[rows, cols].sum())
    np.testing.assert_allclose(total, float(hz[k + "total_cost"]), rtol=1e-12, atol=1e-12)
    if k + "uotod_hungarian_plan" in hz:
        np.testing.assert_array_equal(a.plan[0].numpy(), hz[k + "uotod_hungarian_plan"])


@pytest.mark.parametrize("kind", list(COSTS))
def test_no_predictions_gives_empty_plan(hz, kind):
    inp = _inp(hz, f"{kind}/np0_ng3/")
    a = HungarianMatcher(COSTS[kind]())(inp)
    assert a.plan.shape == (1, 0, 4)
    assert a.pairs()[0][0].numel() == 0
    assert int(a.info["num_unmatched_gt"][0]) == 3


@pytest.mark.parametrize("kind", list(COSTS))
def test_batched_with_empty_image(hz, kind):
    k = f"{kind}/batched_sizes_3_0_5/"
    targets = [dict(labels=torch.tensor(hz[k + f"tgt_labels_{i}"]), boxes=torch.tensor(hz[k + f"tgt_boxes_cxcywh_{i}"]))
               for i in range(3)]
    inp = MatchInput.from_lists(torch.tensor(hz[k + "pred_logits"]), torch.tensor(hz[k + "pred_boxes_cxcywh"]), targets)
    cost_fn = COSTS[kind]()
    a = HungarianMatcher(cost_fn)(inp)
    cost = cost_fn(inp)
    for i, (rows, cols) in enumerate(a.pairs()):
        n = hz[k + f"cost_{i}"].shape[1]
        np.testing.assert_allclose(cost[i, :, :n].numpy(), hz[k + f"cost_{i}"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(rows.numpy(), hz[k + f"rows_{i}"])
        np.testing.assert_array_equal(cols.numpy(), hz[k + f"cols_{i}"])
    np.testing.assert_allclose(a.plan.sum(-1).numpy(), 1.0)


@pytest.mark.parametrize("case", ["ties_all_zero_4x3", "ties_two_optima_2x2", "inf_entry_3x2",
                                  "inf_row_3x2_rowcanbeleftout", "large_finite_1e300", "empty_0x3", "empty_5x0"])
def test_scipy_special_cases(hz, case):
    k = f"scipy_special/{case}/"
    c = torch.tensor(hz[k + "cost"])
    rows, cols = gated_linear_assignment(c.numpy())
    np.testing.assert_array_equal(rows, hz[k + "rows"])
    np.testing.assert_array_equal(cols, hz[k + "cols"])
    full = torch.cat([c, torch.zeros(c.shape[0], 1, dtype=c.dtype)], 1)[None]
    a = HungarianMatcher().match_cost(full)
    r2, c2 = a.pairs()[0]
    np.testing.assert_array_equal(r2.numpy(), hz[k + "rows"])
    np.testing.assert_array_equal(c2.numpy(), hz[k + "cols"])


def test_infeasible_inf_column_leaves_gt_unmatched(hz):
    # scipy raises "cost matrix is infeasible"; our policy: the GT with no allowed pair stays unmatched.
    c = torch.tensor(hz["scipy_special/inf_col_3x2_infeasible/cost"])
    full = torch.cat([c, torch.zeros(c.shape[0], 1, dtype=c.dtype)], 1)[None]
    a = HungarianMatcher().match_cost(full)
    dead = torch.isinf(c).all(0)
    assert a.plan[0, :, :-1][:, dead].sum() == 0
    assert int(a.info["num_unmatched_gt"][0]) == int(dead.sum())


@pytest.mark.parametrize("case", ["nan_entry_2x2", "neg_inf_entry_2x2"])
def test_nan_and_neg_inf_raise(hz, case):
    c = torch.tensor(hz[f"scipy_special/{case}/cost"])
    full = torch.cat([c, torch.zeros(c.shape[0], 1, dtype=c.dtype)], 1)[None]
    with pytest.raises(ValueError, match="NaN|-inf"):
        HungarianMatcher().match_cost(full)


def test_nan_logit_names_tensor_and_ignore_mode():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 6, 4, generator=g)
    logits[0, 2, 1] = float("nan")
    boxes = torch.rand(1, 6, 4, generator=g) * 0.3 + 0.2
    inp = MatchInput.from_lists(logits, boxes, [dict(labels=torch.tensor([1, 2]), boxes=torch.rand(2, 4, generator=g) * 0.3 + 0.2)])
    cost = CompositeCost([ClassProbCost(), L1BoxCost(), GIoUCost()])
    with pytest.raises(ValueError, match="pred_logits"):
        HungarianMatcher(cost)(inp)
    a = HungarianMatcher(cost, nonfinite="ignore")(inp)
    assert a.pred_to_gt()[0, 2] == -1  # the NaN prediction is never matched
    assert int(a.plan[0, :, :2].sum()) == 2


def test_negative_width_box_raises():
    inp = MatchInput.from_lists(torch.zeros(1, 3, 4), torch.tensor([[[0.5, 0.5, -0.1, 0.2]] * 3]),
                                [dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.5, 0.5, 0.2, 0.2]]))])
    with pytest.raises(ValueError, match="negative width"):
        HungarianMatcher(CompositeCost([L1BoxCost(), GIoUCost()]))(inp)


def _brute_force_with_background(c: np.ndarray, bg: np.ndarray) -> float:
    n, g = c.shape
    best = bg.sum()
    for k in range(1, min(n, g) + 1):
        for gs in itertools.combinations(range(g), k):
            for ps in itertools.permutations(range(n), k):
                val = bg.sum() - bg[list(ps)].sum() + c[list(ps), list(gs)].sum()
                best = min(best, val)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_background_threshold_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n, g = 4, 3
    c = rng.uniform(0, 2, size=(n, g))
    bg = np.full(n, 1.0)
    full = torch.tensor(np.concatenate([c, bg[:, None]], 1))[None]
    a = HungarianMatcher(background_threshold=True).match_cost(full)
    value = float((a.plan[0].double() * full[0]).sum())
    assert value == pytest.approx(_brute_force_with_background(c, bg), abs=1e-12)


def test_masks_not_prefix_and_padding_never_matched():
    rng = np.random.default_rng(5)
    c = torch.tensor(rng.uniform(size=(2, 6, 5)))
    gt_mask = torch.tensor([[True, False, True, False], [False, True, True, True]])
    pred_mask = torch.tensor([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    a = HungarianMatcher().match_cost(c, gt_mask=gt_mask, pred_mask=pred_mask)
    assert a.plan[~pred_mask].abs().sum() == 0
    assert (a.plan[..., :4].sum(1)[~gt_mask] == 0).all()
    for b in range(2):
        pi, gi = np.flatnonzero(pred_mask[b]), np.flatnonzero(gt_mask[b])
        sub = c[b].numpy()[np.ix_(pi, gi)]
        from scipy.optimize import linear_sum_assignment
        r, k = linear_sum_assignment(sub)
        rows, cols = a.pairs()[b]
        np.testing.assert_array_equal(rows.numpy(), pi[r])
        np.testing.assert_array_equal(cols.numpy(), gi[k])


def test_fixed_gt_track_queries():
    rng = np.random.default_rng(7)
    c = torch.tensor(rng.uniform(size=(1, 5, 4)))
    fixed = torch.tensor([[-1, 2, -1, -1, -1]])
    inp = cost_only_input(c)
    inp.fixed_gt = fixed
    a = HungarianMatcher()(inp, cost=c)
    assert a.plan[0, 1, 2] == 1
    free = HungarianMatcher().match_cost(c[:, [0, 2, 3, 4]][:, :, [0, 1, 3]])
    rows, cols = free.pairs()[0]
    p_map, g_map = np.array([0, 2, 3, 4]), np.array([0, 1])
    got = {(int(p), int(g)) for p, g in zip(*a.pairs()[0])} - {(1, 2)}
    assert got == {(int(p_map[r]), int(g_map[k])) for r, k in zip(rows, cols)}
    inp.fixed_gt = torch.tensor([[2, 2, -1, -1, -1]])
    with pytest.raises(ValueError, match="same GT"):
        HungarianMatcher()(inp, cost=c)


def test_closest_matchers_equal_uotod(fixtures_dir):
    z = np.load(fixtures_dir / "matchers" / "ot.npz")
    for case in ["np20_ng3", "np100_ng10", "np300_ng30", "np100_ng0", "np10_ng12"]:
        c = torch.tensor(z[f"{case}/cost"])[None]
        np.testing.assert_array_equal(ClosestGTMatcher().match_cost(c).plan[0].numpy(), z[f"{case}/closest_target"])
        ref = z[f"{case}/closest_prediction_th0"]
        # uotod gives a prediction chosen by k GTs mass k; ours splits it so rows sum to 1.
        ours = ClosestPredMatcher().match_cost(c)
        np.testing.assert_allclose(ours.plan[0].numpy(), ref / ref.sum(1, keepdims=True), atol=1e-12)
        np.testing.assert_allclose(ours.plan[0].sum(-1).numpy(), 1.0)
        assert ours.hard == bool((ref.sum(1) <= 1).all())


def test_closest_pred_max_cost():
    c = torch.tensor([[[0.1, 0.9, 1.0], [0.5, 0.8, 1.0]]])
    a = ClosestPredMatcher(max_cost=0.5).match_cost(c)
    np.testing.assert_array_equal(a.plan[0].numpy(), [[1, 0, 0], [0, 0, 1]])
    assert int(a.info["num_unmatched_gt"][0]) == 1
