"""DHN metrics and loss: discretisation, weighted accuracy, baseline, focal loss, LR schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepmot.dhn.data import generate_matrix
from deepmot.dhn.metrics import (discretise, evaluate_predictions, matrix_counts,
                                 row_argmin_baseline)
from deepmot.dhn.train import DHNTrainConfig, step_lr, train_dhn, weighted_focal_loss
from deepmot.matching.linear import gated_linear_assignment


def test_discretise_row_and_column():
    s = torch.tensor([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3], [0.2, 0.4, 0.45]])
    row = discretise(s, 0.5, "row")
    col = discretise(s, 0.5, "col")
    assert row.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert col.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert discretise(s, 0.3, "col").tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert discretise(s, 0.3, "mutual").tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]


def test_weighted_accuracy_properties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, m = (int(v) for v in rng.integers(2, 9, 2))
        s = generate_matrix(rng, n, m)
        y = s.target
        perfect = matrix_counts(y, y)
        assert perfect["wa"] == 1.0 and perfect["exact"] == 1.0
        n1 = int(y.sum())
        if 0 < n1 < y.numel():
            # with the class weights w0 = n1/n, w1 = n0/n both classes weigh the same in total,
            # so predicting nothing is exactly 50 % weighted accuracy
            assert math.isclose(matrix_counts(torch.zeros_like(y), y)["wa"], 0.5)
            assert math.isclose(matrix_counts(torch.ones_like(y), y)["wa"], 0.5)


def test_baseline_is_nearest_allowed_and_equals_hungarian_without_conflicts():
    d = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.4]])
    forb = torch.tensor([[False, False, True], [True, False, False]])
    assert row_argmin_baseline(d, forb).tolist() == [[1, 0, 0], [0, 1, 0]]
    all_forb = torch.ones_like(forb)
    assert row_argmin_baseline(d, all_forb).sum() == 0
    # a diagonal-dominant matrix has no conflicts: baseline == gated Hungarian
    rng = np.random.default_rng(1)
    d = torch.from_numpy(rng.uniform(0.5, 0.9, (5, 5))) + 0.0
    d.fill_diagonal_(0.05)
    r, c = gated_linear_assignment(d.numpy())
    exact = torch.zeros(5, 5)
    exact[r, c] = 1
    assert torch.equal(row_argmin_baseline(d, torch.zeros(5, 5, dtype=torch.bool)), exact.double())


def test_evaluate_predictions_on_perfect_scores():
    rng = np.random.default_rng(2)
    samples = [generate_matrix(rng, int(n), int(m)) for n, m in rng.integers(1, 25, (20, 2))]
    res = evaluate_predictions(samples, [s.target * 0.9 + 0.05 for s in samples])
    for method in ("dhn_row", "dhn_col", "dhn_mutual"):
        assert res[method]["all"]["exact"] == 1.0
        assert res[method]["all"]["precision"] == 1.0 and res[method]["all"]["recall"] == 1.0
    assert res["baseline"]["all"]["count"] == 20
    assert sum(r["count"] for b, r in res["baseline"].items() if b != "all") == 20


@pytest.mark.parametrize("balance", [1.0, 0.5, 0.0])
def test_weighted_focal_loss_matches_the_formula(balance):
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, dtype=torch.float64)
    y = torch.zeros(3, 4, 5, dtype=torch.float64)
    y[0, 0, 1] = y[0, 2, 3] = y[1, 1, 1] = 1  # matrix 2: no ones (edge case w0 = 1)
    p = torch.sigmoid(logits)
    ref = 0.0
    for b in range(3):
        n1, n = float(y[b].sum()), y[b].numel()
        w0 = 1.0 if n1 == 0 else n1 / n
        w0 = balance * w0 + (1 - balance) * 0.5
        w1 = 1 - w0
        ref = ref + (-(w1 * y[b] * (1 - p[b]) ** 2 * torch.log(p[b] + 1e-8)
                       + w0 * (1 - y[b]) * p[b] ** 2 * torch.log(1 - p[b] + 1e-8))).sum()
    ref = 10 * ref / y.numel()
    assert torch.allclose(weighted_focal_loss(logits, y, 2.0, 10.0, balance), ref, rtol=1e-6)
    ones = torch.ones(1, 1, 1, dtype=torch.float64)
    assert weighted_focal_loss(torch.tensor([[[-1.0]]], dtype=torch.float64), ones) > 0


def test_step_lr_does_not_compound():
    cfg = DHNTrainConfig(lr=3e-4, lr_gamma=0.95, lr_every=20_000)
    assert step_lr(cfg, 0) == 3e-4 and step_lr(cfg, 19_999) == 3e-4
    assert math.isclose(step_lr(cfg, 20_000), 3e-4 * 0.95)
    assert math.isclose(step_lr(cfg, 45_000), 3e-4 * 0.95 ** 2)


def test_class_balance_outside_unit_interval_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="class_balance"):  # a ConfigError
        train_dhn(DHNTrainConfig(class_balance=1.5, steps=1))
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
