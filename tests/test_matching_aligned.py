"""Assignment-aligned loss against the reference arrays and finite differences of the optimal value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmot.matching import AssignmentAlignedLoss, MatchInput

CASES = ["np20_ng4", "np50_ng10", "np8_ng0", "np6_ng6", "np3_ng5"]


@pytest.fixture(scope="module")
def az(fixtures_dir):
    return np.load(fixtures_dir / "matchers" / "aligned_loss.npz")


def _loss(z, k, logits, box_raw, **kw):
    inp = MatchInput.from_lists(logits[None], box_raw.sigmoid()[None],
                                [dict(labels=torch.tensor(z[k + "tgt_labels"]), boxes=torch.tensor(z[k + "tgt_boxes_cxcywh"]))])
    return AssignmentAlignedLoss(**kw)(inp)


@pytest.mark.parametrize("case", CASES)
def test_loss_assignment_and_gradients_equal_reference(az, case):
    k = case + "/"
    logits = torch.tensor(az[k + "logits"], requires_grad=True)
    box_raw = torch.tensor(az[k + "box_raw"], requires_grad=True)
    out = _loss(az, k, logits, box_raw)
    out["loss"].backward()
    for name in ("loss", "loss_assign", "loss_background"):
        assert float(out[name].detach()) == pytest.approx(float(az[k + name]), abs=1e-10)
    rows, cols = out["assignment"].pairs()[0]
    np.testing.assert_array_equal(rows.numpy(), az[k + "rows"])
    np.testing.assert_array_equal(cols.numpy(), az[k + "cols"])
    np.testing.assert_allclose(logits.grad.numpy(), az[k + "grad_logits"], atol=1e-10)
    np.testing.assert_allclose(box_raw.grad.numpy(), az[k + "grad_box_raw"], atol=1e-10)
    n_gt = len(az[k + "tgt_labels"])
    assert int(out["assignment"].info["num_unmatched_gt"][0]) == max(0, n_gt - len(az[k + "rows"]))


@pytest.mark.parametrize("case", ["np20_ng4", "np6_ng6", "np3_ng5"])
def test_gradient_equals_finite_differences_of_optimal_value(az, case):
    k = case + "/"
    params = torch.cat([torch.tensor(az[k + "logits"]).flatten(), torch.tensor(az[k + "box_raw"]).flatten()])
    n_l = az[k + "logits"].size

    def value(w):
        return _loss(az, k, w[:n_l].view(az[k + "logits"].shape), w[n_l:].view(az[k + "box_raw"].shape))["loss"]

    w = params.clone().requires_grad_(True)
    value(w).backward()
    rng = np.random.default_rng(1)
    h = 1e-6
    for i in rng.choice(params.numel(), size=12, replace=False):
        e = torch.zeros_like(params)
        e[i] = h
        fd = (float(value(params + e)) - float(value(params - e))) / (2 * h)
        assert fd == pytest.approx(float(w.grad[i]), abs=1e-6)


def test_gradcheck_at_fixed_assignment(az):
    # Away from ties the assignment is locally constant, so the loss is smooth: torch's gradcheck holds.
    k = "np6_ng6/"
    box_raw = torch.tensor(az[k + "box_raw"])
    fn = lambda lg: _loss(az, k, lg, box_raw)["loss"]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (torch.tensor(az[k + "logits"], requires_grad=True),), eps=1e-6, atol=1e-5)


def test_num_gt_normalisation_and_batch_sum(az):
    k = "np20_ng4/"
    logits, box_raw = torch.tensor(az[k + "logits"]), torch.tensor(az[k + "box_raw"])
    one = _loss(az, k, logits, box_raw)["loss"]
    inp = MatchInput.from_lists(torch.stack([logits, logits]), torch.stack([box_raw, box_raw]).sigmoid(),
                                [dict(labels=torch.tensor(az[k + "tgt_labels"]), boxes=torch.tensor(az[k + "tgt_boxes_cxcywh"]))] * 2)
    both = AssignmentAlignedLoss()(inp)["loss"]
    assert float(both) == pytest.approx(2 * float(one), rel=1e-12)
    norm = AssignmentAlignedLoss(normalize="num_gt")(inp)["loss"]
    assert float(norm) == pytest.approx(2 * float(one) / 8, rel=1e-12)
