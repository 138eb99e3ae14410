"""Property tests (hypothesis): plans are valid transport plans; exact OT is the Hungarian; the
registry makes matchers interchangeable; association equals a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmot.matching import Assignment, HungarianMatcher, MatchInput, associate, build_matcher
from deepmot.matching.ot import ot_marginals


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_input(seed: int, b: int, n: int, g: int, k: int = 3) -> MatchInput:
    gen = torch.Generator().manual_seed(seed)
    gt_mask = torch.rand(b, g, generator=gen) > 0.3
    pred_mask = torch.rand(b, n, generator=gen) > 0.1
    return MatchInput(pred_logits=torch.randn(b, n, k, generator=gen),
                      pred_boxes=torch.rand(b, n, 4, generator=gen) * 0.4 + 0.1,
                      gt_labels=torch.randint(0, k, (b, g), generator=gen),
                      gt_boxes=torch.rand(b, g, 4, generator=gen) * 0.4 + 0.1, gt_mask=gt_mask, pred_mask=pred_mask,
                      ref_boxes=torch.rand(b, n, 4, generator=gen) * 0.4 + 0.1)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 3), n=st.integers(0, 12), g=st.integers(0, 6),
       name=st.sampled_from(["hungarian", "ot", "uot", "closest_gt", "closest_pred", "deta_stage2", "iou"]))
def test_every_matcher_gives_a_valid_plan(seed, b, n, g, name):
    inp = _random_input(seed, b, n, g)
    kw = {"num_queries": n} if name == "deta_stage2" else {}
    if name == "ot":
        kw = {"n_iter": 3000, "tol": 1e-6}
    a = build_matcher(name, **kw)(inp)
    assert isinstance(a, Assignment) and a.plan.shape == (b, n, g + 1)
    assert (a.plan >= 0).all() and torch.isfinite(a.plan).all()
    valid = a.pred_mask
    rows = a.plan.sum(-1)
    tol = 1e-5 if name != "uot" else 0.05  # UOT relaxes the row marginal (tau_pred = 100)
    if name == "ot":
        tol = max(tol, float(a.info["marginal_err"].max()) + 1e-6)
    np.testing.assert_allclose(rows[valid].numpy(), 1.0, atol=tol)
    assert rows[~valid].abs().sum() == 0
    assert a.plan[..., :g][~a.gt_mask[:, None, :].expand(-1, n, -1)].abs().sum() == 0
    if a.hard:
        assert set(a.plan.unique().tolist()) <= {0.0, 1.0}
    p2g = a.pred_to_gt()
    assert ((p2g == -2) == ~valid).all()
    for (pi, gi), row in zip(a.pairs(), p2g):
        np.testing.assert_array_equal(row[pi].numpy(), gi.numpy())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 15), g=st.integers(0, 8))
def test_exact_ot_with_background_column_equals_hungarian(seed, n, g):
    rng = np.random.default_rng(seed)
    cost = rng.uniform(size=(n, g + 1))
    cost[:, -1] = rng.uniform(0.5, 1.5)  # a constant background cost (Prop. 1)
    a, b = ot_marginals(torch.ones(1, n, dtype=torch.bool), torch.ones(1, g, dtype=torch.bool))
    exact = ot.emd(a[0].numpy(), b[0].numpy(), cost) * n
    hung = HungarianMatcher().match_cost(torch.tensor(cost)[None]).plan[0].numpy()
    if n >= g:
        np.testing.assert_allclose(exact, hung, atol=1e-9)
    else:  # Np < Ng: OT spreads each prediction over GT; its optimal cost is n/g-weighted
        assert (exact >= -1e-12).all()
        np.testing.assert_allclose(exact.sum(1), 1.0, atol=1e-9)


def _brute_associate(iou: np.ndarray, thr: float) -> tuple[int, float]:
    n, m = iou.shape
    best = (0, 0.0)
    for k in range(min(n, m), 0, -1):
        for rs in itertools.combinations(range(n), k):
            for cs in itertools.permutations(range(m), k):
                vals = iou[list(rs), list(cs)]
                if (vals >= thr).all():
                    best = max(best, (k, float(vals.sum())), key=lambda t: (t[0], t[1]))
        if best[0]:
            return best
    return best


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 4), m=st.integers(0, 4))
def test_associate_equals_brute_force(seed, n, m):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 50
    tracks = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=gen) * 10], 1)
    dets = tracks[torch.randint(0, max(n, 1), (m,), generator=gen)] if n else torch.rand(m, 4, generator=gen) * 50
    dets = dets + torch.randn(m, 4, generator=gen) * 4
    dets[:, 2:] = torch.maximum(dets[:, 2:], dets[:, :2] + 1)
    ti, di = associate(tracks, dets, iou_threshold=0.3)
    assert ti.dtype == torch.int64 and len(set(ti.tolist())) == len(ti) and len(set(di.tolist())) == len(di)
    from torchvision.ops import box_iou
    iou = box_iou(tracks.double(), dets.double()).numpy() if n and m else np.zeros((n, m))
    k, total = _brute_associate(iou, 0.3)
    assert len(ti) == k
    assert float(iou[ti.numpy(), di.numpy()].sum()) == pytest.approx(total, abs=1e-9)
    tg, dg = associate(tracks, dets, 0.3, method="greedy")
    assert (iou[tg.numpy(), dg.numpy()] >= 0.3).all()


def test_associate_rejects_bad_input():
    with pytest.raises(ValueError, match="track_boxes"):
        associate(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        associate(torch.full((1, 4), float("nan")), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="method"):
        associate(torch.zeros(1, 4), torch.zeros(1, 4), method="nope")


def test_build_matcher_unknown_name():
    with pytest.raises(ValueError, match="unknown matcher"):
        build_matcher("nope")
