"""OT / UOT matcher against uotod (compat mode), POT (converged) and the theory's limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepmot.matching import ClosestGTMatcher, HungarianMatcher, OTMatcher, eps_rule, softmin_plan

CASES = ["np20_ng3", "np100_ng10", "np300_ng30", "np100_ng0"]
TAU2 = ["0.01", "0.1", "1", "10"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def oz(fixtures_dir):
    return np.load(fixtures_dir / "matchers" / "ot.npz")


def _cost(oz, case):
    return torch.tensor(oz[f"{case}/cost"])[None]


def test_eps_rule_matches_reference(fixtures_dir):
    import json
    man = json.loads((fixtures_dir / "matchers" / "manifest.json").read_text())["components"]["ot"]["cases"]
    for case in CASES:
        assert eps_rule(man[case]["n_pred"]) == pytest.approx(man[case]["eps_default"], rel=1e-12)
    assert eps_rule(100, rule="logn") == pytest.approx(0.12 / (math.log(100) + 1))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n_iter", [1, 20, 2000])
def test_balanced_equals_uotod_iterations(oz, case, n_iter):
    ref = oz[f"{case}/uotod_bal_it{n_iter}"]
    for compat in ("uotod", "none"):  # one image, non-negative cost: the two normalisations agree
        a = OTMatcher(n_iter=n_iter, compat=compat).match_cost(_cost(oz, case))
        np.testing.assert_allclose(a.plan[0].numpy(), ref, atol=1e-6)


@pytest.mark.filterwarnings("ignore:OTMatcher")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tau2", TAU2)
@pytest.mark.parametrize("eps", ["epsdef", "eps0.05"])
def test_unbalanced_equals_uotod_70_iterations(oz, case, tau2, eps):
    key = f"uot_{eps}_tau1_100_tau2_{tau2}"
    e = None if eps == "epsdef" else 0.05
    a = OTMatcher(eps=e, tau_pred=100.0, tau_gt=float(tau2), n_iter=70, tol=None, compat="uotod").match_cost(_cost(oz, case))
    np.testing.assert_allclose(a.plan[0].numpy(), oz[f"{case}/uotod_{key}_it70"], atol=1e-6)


@pytest.mark.parametrize("case", ["np20_ng3", "np100_ng10", "np100_ng0"])
def test_balanced_converged_equals_pot(oz, case):
    a = OTMatcher(n_iter=20000, tol=1e-9).match_cost(_cost(oz, case))
    np.testing.assert_allclose(a.plan[0].numpy(), oz[f"{case}/pot_bal_sinkhorn"], atol=1e-5)
    np.testing.assert_allclose(a.plan[0].numpy(), oz[f"{case}/pot_bal_sinkhorn_log"], atol=1e-5)
    assert float(a.info["marginal_err"][0]) < 1e-8


@pytest.mark.parametrize("case", ["np20_ng3", "np100_ng10"])
@pytest.mark.parametrize("tau2", ["0.01", "1"])
@pytest.mark.parametrize("eps", ["epsdef", "eps0.05"])
def test_unbalanced_converged_equals_pot_entropy(oz, case, tau2, eps):
    e = None if eps == "epsdef" else 0.05
    a = OTMatcher(eps=e, tau_pred=100.0, tau_gt=float(tau2), n_iter=20000, tol=1e-10).match_cost(_cost(oz, case))
    key = f"uot_{eps}_tau1_100_tau2_{tau2}"
    np.testing.assert_allclose(a.plan[0].numpy(), oz[f"{case}/pot_{key}"], atol=1e-5)
    # POT's default reg_type='kl' solves another problem (reference a x b): we must not match it.
    assert np.abs(a.plan[0].numpy() - oz[f"{case}/pot_kl_default_{key}"]).max() > 1e-3


@pytest.mark.parametrize("case", ["np20_ng3", "np100_ng10", "np300_ng30"])
def test_exact_ot_is_hungarian_and_small_eps_approaches_it(oz, case):
    c = _cost(oz, case)
    hung = HungarianMatcher().match_cost(c).plan[0].numpy()
    np.testing.assert_allclose(hung, oz[f"{case}/pot_emd_exact"], atol=1e-9)
    np.testing.assert_allclose(hung, oz[f"{case}/hungarian_plan"], atol=0)
    if case == "np100_ng10":
        a = OTMatcher(eps=5e-3, n_iter=20000, tol=1e-6).match_cost(c)
        np.testing.assert_array_equal(a.plan[0].argmax(-1).numpy(), hung.argmax(-1))


@pytest.mark.parametrize("case", CASES)
def test_uot_limit_is_closest_gt(oz, case):
    c = _cost(oz, case)
    a = OTMatcher(eps=1e-3, tau_pred=1e4, tau_gt=1e-6, n_iter=1000, tol=1e-10).match_cost(c)
    closest = ClosestGTMatcher().match_cost(c).plan[0]
    np.testing.assert_array_equal(a.plan[0].argmax(-1).numpy(), closest.argmax(-1).numpy())
    if case != "np100_ng0":  # there POT's exp-domain kernel exp(-1/1e-3) underflows to an all-zero plan
        np.testing.assert_allclose(a.plan[0].numpy(), oz[f"{case}/pot_uot_tau1_1e4_tau2_1e-6_eps1e-3"], atol=1e-5)


@pytest.mark.parametrize("case", ["np20_ng3", "np100_ng10", "np300_ng30", "np100_ng0"])
def test_softmin_equals_uotod(oz, case):
    c = _cost(oz, case)
    pm, gm = torch.ones(c.shape[:2], dtype=torch.bool), torch.ones(1, c.shape[2] - 1, dtype=torch.bool)
    np.testing.assert_allclose(softmin_plan(c, pm, gm, eps=0.1, over="gt")[0].numpy(),
                               oz[f"{case}/softmin_target_reg0.1"], atol=1e-12)
    np.testing.assert_allclose(softmin_plan(c, pm, gm, eps=0.1, over="pred")[0].numpy(),
                               oz[f"{case}/softmin_prediction_reg0.1"], atol=1e-12)


def test_padded_batch_equals_uotod_forward(oz):
    k = "batch2_padded_ng3_5/"
    gm = torch.tensor(oz[k + "tgt_mask"])
    cases = [("balanced", OTMatcher(compat="uotod")),
             ("unbalanced_tau2_0.1", OTMatcher(compat="uotod", tau_pred=100.0, tau_gt=0.1, n_iter=70)),
             ("hungarian", HungarianMatcher())]
    for name, m in cases:
        a = m.match_cost(torch.tensor(oz[k + "cost_" + name]), gt_mask=gm)
        np.testing.assert_allclose(a.plan.numpy(), oz[k + "plan_" + name], atol=1e-5)
    alone = OTMatcher(compat="uotod").match_cost(torch.tensor(oz[k + "cost_balanced"])[:1], gt_mask=gm[:1])
    np.testing.assert_allclose(alone.plan.numpy(), oz[k + "plan_balanced_img0_alone"], atol=1e-5)


def test_per_image_normalisation_decouples_images(oz):
    k = "batch2_padded_ng3_5/"
    c, gm = torch.tensor(oz[k + "cost_balanced"]), torch.tensor(oz[k + "tgt_mask"])
    m = OTMatcher()
    batched = m.match_cost(c, gt_mask=gm).plan
    for b in range(2):
        alone = m.match_cost(c[b:b + 1], gt_mask=gm[b:b + 1]).plan
        np.testing.assert_allclose(batched[b:b + 1].numpy(), alone.numpy(), atol=1e-6)
    # uotod's global max couples them (the documented 0.0077 difference)
    g = OTMatcher(compat="uotod").match_cost(c, gt_mask=gm).plan[:1]
    alone = OTMatcher(compat="uotod").match_cost(c[:1], gt_mask=gm[:1]).plan
    assert np.abs(g.numpy() - alone.numpy()).max() > 1e-3


def test_background_cost_irrelevant_without_normalisation(oz):
    c0 = torch.tensor(oz["bg_cost_sensitivity_np50_ng5/cost_without_background"])[None]
    plans = []
    for bg in (0.0, 0.8, 10.0):
        c = torch.cat([c0, torch.full((1, 50, 1), bg, dtype=c0.dtype)], -1)
        plans.append(OTMatcher(normalize="none", n_iter=2000, tol=1e-10, eps=0.02).match_cost(c).plan)
    for p in plans[1:]:
        np.testing.assert_allclose(p.numpy(), plans[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("balanced", [True, False])
def test_fewer_predictions_than_gt_stays_feasible(oz, balanced):
    c = torch.tensor(oz["np10_ng12/cost"])[None]
    kw = {} if balanced else dict(tau_pred=100.0, tau_gt=0.1, n_iter=200)
    a = OTMatcher(n_iter=5000, tol=1e-9, **kw).match_cost(c) if balanced else OTMatcher(**kw).match_cost(c)
    assert torch.isfinite(a.plan).all() and (a.plan >= 0).all()
    assert float(a.plan[0, :, -1].abs().max()) < 1e-6  # no background mass when Np < Ng
    if balanced:
        np.testing.assert_allclose(a.plan[0].sum(-1).numpy(), 1.0, atol=1e-6)
        np.testing.assert_allclose(a.plan[0, :, :-1].sum(0).numpy(), 10 / 12, atol=1e-6)


def test_no_gt_all_background_and_nonfinite_policy():
    c = torch.ones(2, 5, 1)
    a = OTMatcher().match_cost(c)
    np.testing.assert_allclose(a.plan.numpy(), 1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    c = torch.tensor(rng.uniform(size=(1, 10, 4)))
    c[0, 3, 1] = math.inf
    a = OTMatcher(n_iter=500, tol=1e-8).match_cost(c)
    assert torch.isfinite(a.plan).all() and a.plan[0, 3, 1] == 0
    err = float(a.info["marginal_err"][0])
    assert err < 1e-2
    np.testing.assert_allclose(a.plan[0].sum(-1).numpy(), 1.0, atol=err + 1e-12)
    c[0, 3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        OTMatcher().match_cost(c)
    a = OTMatcher(nonfinite="ignore").match_cost(c)
    assert torch.isfinite(a.plan).all() and a.plan[0, 3, 1] == 0


def test_batched_equals_loop_with_masks():
    rng = np.random.default_rng(11)
    c = torch.tensor(rng.uniform(size=(4, 30, 7)), dtype=torch.float32)
    gm = torch.tensor(rng.uniform(size=(4, 6)) > 0.3)
    pm = torch.tensor(rng.uniform(size=(4, 30)) > 0.2)
    m = OTMatcher(tau_pred=100.0, tau_gt=0.1, n_iter=70)
    batched = m.match_cost(c, gt_mask=gm, pred_mask=pm)
    for b in range(4):
        pi, gi = pm[b].nonzero()[:, 0], gm[b].nonzero()[:, 0]
        sub = c[b][pi][:, torch.cat([gi, torch.tensor([6])])][None]
        alone = m.match_cost(sub).plan[0]
        np.testing.assert_allclose(batched.plan[b][pi][:, torch.cat([gi, torch.tensor([6])])].numpy(), alone.numpy(), atol=1e-5)
    assert batched.plan[~pm].abs().sum() == 0
