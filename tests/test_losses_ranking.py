"""Ranking losses (AP, RS, BAP, BRS) against the reference fixtures and an independent loop oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmot.losses import ranking
from deepmot.losses.ranking import ap_loss, rank_sort_loss

CASES = ["p1_n10", "p5_n50", "p20_n500", "p50_n5000", "p100_n20000", "paper_synth_L10000_m1pct"]
EDGE = ["no_positives", "no_negatives", "no_relevant_negatives", "all_logits_tied", "ignored_minus1_labels",
        "positive_with_iou_exactly_0", "nan_negative_logit", "single_positive"]
# name -> (function, target field, keyword arguments that reproduce the released reference)
KINDS = {
    "rs": (rank_sort_loss, "targets_iou", dict(bucketed=False)),
    "brs": (rank_sort_loss, "targets_iou", dict(bucketed=True)),
    "ap": (ap_loss, "targets_binary", dict()),
    "bap": (ap_loss, "targets_binary", dict(bucketed=True, interpolated=False, self_term=None)),
}


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    z = np.load(fixtures_dir / "matchers" / "ranking.npz")
    manifest = json.loads((fixtures_dir / "matchers" / "manifest.json").read_text())
    return {k: z[k] for k in z.files}, manifest["components"]["ranking"]["cases"]


def _run(fn, logits, targets, **kw):
    """(loss values (k,), gradient of their sum) as numpy."""
    x = torch.as_tensor(logits).clone().requires_grad_(True)
    out = fn(x, torch.as_tensor(targets), **kw)
    out = out if isinstance(out, tuple) else (out,)
    sum(out).backward()
    return np.array([o.item() for o in out]), x.grad.numpy()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_reference_fixture(ref, case, kind):
    arrays, _ = ref
    fn, tfield, kw = KINDS[kind]
    deltas = [k.split("_delta")[1][: -len("_grad")] for k in arrays
              if k.startswith(f"{case}/{kind}_delta") and k.endswith("_grad")]
    assert deltas, "fixture has no reference for this case"
    for d in deltas:
        key = f"{case}/{kind}_delta{d}"
        vals, grad = _run(fn, arrays[f"{case}/logits"], arrays[f"{case}/{tfield}"], delta=float(d), **kw)
        np.testing.assert_allclose(vals, arrays[key + "_losses"], atol=1e-6, err_msg=key)
        np.testing.assert_allclose(grad, arrays[key + "_grad"], atol=1e-6, err_msg=key)


@pytest.mark.parametrize("edge", EDGE)
@pytest.mark.parametrize("kind", list(KINDS))
def test_edge_cases_match_reference_where_it_works(ref, edge, kind):
    arrays, cases = ref
    fn, tfield, kw = KINDS[kind]
    case = f"edge/{edge}"
    targets = arrays.get(f"{case}/{tfield}", arrays.get(f"{case}/targets_iou"))
    vals, grad = _run(fn, arrays[f"{case}/logits"], targets, nonfinite="ignore", **kw)
    assert np.isfinite(vals).all() and np.isfinite(grad).all()
    assert abs(grad.sum()) < 1e-6  # identity update
    meta = cases[case]
    for src in (kind, f"{kind}_brlcopy"):  # the reference, or BRL's guarded copy where the original crashes
        if meta.get(f"{src}_losses") is not None:
            np.testing.assert_allclose(vals, meta[f"{src}_losses"], atol=1e-6)
        if f"{case}/{src}_grad" in arrays:
            np.testing.assert_allclose(grad, arrays[f"{case}/{src}_grad"], atol=1e-6)
    if edge in ("no_positives",):
        assert np.all(vals == 0) and np.all(grad == 0)
    if edge in ("no_negatives", "no_relevant_negatives"):  # perfect ranking: ranking loss 0 (BAP ref crashes)
        assert vals[0] == 0


def test_ap_delta0_reference_losses(ref):
    arrays, cases = ref
    meta = cases["edge/ap_delta0"]
    s = torch.tensor(arrays["edge/ap_delta0/logits"])
    t = (torch.arange(s.numel()) < 4).float()  # the case's binary labels: first four are positives
    assert ap_loss(s, t, delta=0.0).item() == pytest.approx(meta["ap_losses"][0], abs=1e-6)
    bap = ap_loss(s, t, delta=0.0, bucketed=True, interpolated=False, self_term=None)
    assert bap.item() == pytest.approx(meta["bap_losses"][0], abs=1e-6)
    assert [v.item() for v in rank_sort_loss(s, t, delta=0.0)] == pytest.approx(meta["rs_losses"], abs=1e-6)


def test_nan_logit_raises_by_default(ref):
    arrays, _ = ref
    s = torch.tensor(arrays["edge/nan_negative_logit/logits"])
    t = torch.tensor(arrays["edge/nan_negative_logit/targets_iou"])
    with pytest.raises(ValueError, match="non-finite"):
        rank_sort_loss(s, t)
    with pytest.raises(ValueError, match="non-finite"):
        ap_loss(s, (t > 0).float())


def test_bad_arguments_raise():
    s, t = torch.zeros(5), torch.zeros(4)
    with pytest.raises(ValueError, match="same shape"):
        rank_sort_loss(s, t)
    with pytest.raises(ValueError, match="delta"):
        ap_loss(torch.zeros(3), torch.ones(3), delta=-1.0)
    with pytest.raises(ValueError, match="self_term"):
        ap_loss(torch.zeros(3), torch.ones(3), self_term=0.0)
    with pytest.raises(ValueError, match="floating"):
        ap_loss(torch.zeros(3, dtype=torch.int64), torch.ones(3))


# ---------------------------------------------------------------- independent loop oracle


def _h(x: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(x / (2 * delta) + 0.5, 0, 1) if delta > 0 else (x >= 0).astype(float)


def _oracle(s, t, delta, self_term, interpolated):
    """Straight per-positive loop over the spec's formulas (float64), ascending logit order."""
    s, t = np.asarray(s, float), np.asarray(t, float)
    pos = np.flatnonzero(t > 0)
    neg = np.flatnonzero(t == 0)
    grad_r, grad_s = np.zeros_like(s), np.zeros_like(s)
    if len(pos) == 0:
        return 0.0, 0.0, 0.0, grad_r, grad_s
    neg = neg[s[neg] >= s[pos].min() - delta]
    P = len(pos)
    l_r, l_s, prec, rank = {}, {}, {}, {}
    for i in pos:
        hp = _h(s[pos] - s[i], delta)
        hp[pos == i] = self_term
        hn = _h(s[neg] - s[i], delta)
        rp, fp = hp.sum(), hn.sum()
        rank[i], prec[i], l_r[i] = rp + fp, rp / (rp + fp), fp / (rp + fp)
        if fp > 1e-10 and not interpolated:
            grad_r[i] -= l_r[i] / P
            grad_r[neg] += hn * l_r[i] / fp / P
        better = t[pos] >= t[i]
        l_s[i] = (hp * (1 - t[pos])).sum() / rp - (hp * better * (1 - t[pos])).sum() / (hp * better).sum()
        miss = hp * ~better
        if miss.sum() > 1e-10:
            grad_s[i] -= l_s[i] / P
            grad_s[pos] += miss * l_s[i] / miss.sum() / P
    ap_interp = 0.0
    if interpolated:
        best = 0.0
        for i in sorted(pos, key=lambda k: (s[k], k)):
            hn = _h(s[neg] - s[i], delta)
            w = 1.0 if best <= prec[i] else (1 - best) / (1 - prec[i])
            best = max(best, prec[i])
            grad_r[neg] += hn / rank[i] * w / P
            grad_r[i] = -(1 - best) / P
            ap_interp += (1 - best) / P
    return np.mean(list(l_r.values())), np.mean(list(l_s.values())), ap_interp, grad_r, grad_s


def _sample(seed: int, n: int, pos_frac: float, tie_grid: bool):
    g = np.random.default_rng(seed)
    s = g.normal(size=n)
    if tie_grid:  # coarse grid -> many exact ties between positives and negatives
        s = np.round(s * 2) / 2
    t = np.where(g.random(n) < pos_frac, g.uniform(0.05, 1.0, n), 0.0)
    t[g.random(n) < 0.1] = -1.0
    return torch.tensor(s), torch.tensor(t)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), pos_frac=st.floats(0.05, 0.6),
       delta=st.sampled_from([0.0, 0.25, 0.5, 1.0]), ties=st.booleans(), self_term=st.sampled_from([None, 1.0]))
def test_plain_losses_equal_loop_oracle(seed, n, pos_frac, delta, ties, self_term):
    s, t = _sample(seed, n, pos_frac, ties)
    st_val = (0.5 if delta > 0 else 1.0) if self_term is None else self_term
    lr, ls, ap_i, gr, gs = _oracle(s.numpy(), t.numpy(), delta, st_val, interpolated=False)
    x = s.clone().requires_grad_(True)
    r, so = rank_sort_loss(x, t, delta=delta, bucketed=False, self_term=self_term)
    (gr_ours,) = torch.autograd.grad(r, x, retain_graph=True)
    (gs_ours,) = torch.autograd.grad(so, x)
    assert r.item() == pytest.approx(lr, abs=1e-12) and so.item() == pytest.approx(ls, abs=1e-12)
    np.testing.assert_allclose(gr_ours.numpy(), gr, atol=1e-12)
    np.testing.assert_allclose(gs_ours.numpy(), gs, atol=1e-12)
    _, _, ap_i, gap, _ = _oracle(s.numpy(), t.numpy(), delta, st_val, interpolated=True)
    x = s.clone().requires_grad_(True)
    a = ap_loss(x, t, delta=delta, self_term=self_term)
    a.backward()
    assert a.item() == pytest.approx(ap_i, abs=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), gap, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 80), pos_frac=st.floats(0.02, 0.7), ties=st.booleans(),
       interpolated=st.booleans())
def test_bucketed_equals_plain_at_delta0(seed, n, pos_frac, ties, interpolated):
    """Thm 4.1: with delta = 0 bucketing is exact, ties included (BRS = RS, BAP = AP)."""
    s, t = _sample(seed, n, pos_frac, ties)
    for fn, kw in ((rank_sort_loss, {}), (ap_loss, dict(interpolated=interpolated))):
        v0, g0 = _run(fn, s, t, delta=0.0, bucketed=False, **kw)
        v1, g1 = _run(fn, s, t, delta=0.0, bucketed=True, **kw)
        np.testing.assert_allclose(v1, v0, atol=1e-12)
        np.testing.assert_allclose(g1, g0, atol=1e-12)


def test_bucketed_close_to_plain_at_small_delta_float32():
    """Held-out seeds, 1 % positives, delta = 1e-6: BRS = RS and BAP = AP to float32 accuracy."""
    for seed in (101, 202):
        g = torch.Generator().manual_seed(seed)
        n = 5000
        t = (torch.rand(n, generator=g) < 0.01).float() * torch.empty(n).uniform_(0.1, 1.0, generator=g)
        s = torch.randn(n, generator=g) + 0.5 * (t > 0)
        for fn, kw in ((rank_sort_loss, {}), (ap_loss, {}), (ap_loss, dict(interpolated=False, self_term=None))):
            v0, g0 = _run(fn, s, t, delta=1e-6, bucketed=False, **kw)
            v1, g1 = _run(fn, s, t, delta=1e-6, bucketed=True, **kw)
            np.testing.assert_allclose(v1, v0, atol=1e-6)
            np.testing.assert_allclose(g1, g0, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), bucketed=st.booleans(),
       delta=st.sampled_from([0.0, 0.5, 1.0]), shift=st.floats(-5, 5))
def test_properties(seed, n, bucketed, delta, shift):
    """Losses in [0, 1]; gradients sum to 0; permutation equivariance; shift invariance."""
    s, t = _sample(seed, n, 0.3, False)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    for fn in (rank_sort_loss, ap_loss):
        v, g = _run(fn, s, t, delta=delta, bucketed=bucketed)
        assert np.all(v >= -1e-12) and np.all(v <= 1 + 1e-12)
        assert abs(g.sum()) < 1e-9
        assert np.all(g[t.numpy() < 0] == 0)
        vp, gp = _run(fn, s[perm], t[perm], delta=delta, bucketed=bucketed)
        np.testing.assert_allclose(vp, v, atol=1e-12)
        np.testing.assert_allclose(gp, g[perm.numpy()], atol=1e-12)
        vs, gs = _run(fn, s + shift, t, delta=delta, bucketed=bucketed)
        np.testing.assert_allclose(vs, v, atol=1e-9)
        np.testing.assert_allclose(gs, g, atol=1e-9)


def test_rank_and_sort_have_separate_gradients():
    s, t = _sample(7, 200, 0.1, False)
    x = s.clone().requires_grad_(True)
    r, so = rank_sort_loss(x, t)
    g_r, = torch.autograd.grad(r, x, retain_graph=True)
    g_s, = torch.autograd.grad(so, x, retain_graph=True)
    g_w, = torch.autograd.grad(2.0 * r + 0.5 * so, x)
    assert g_s.abs().sum() > 0 and g_r.abs().sum() > 0
    torch.testing.assert_close(g_w, 2.0 * g_r + 0.5 * g_s)
    assert torch.all(g_s[t <= 0] == 0)  # sorting error only moves positives


@pytest.mark.parametrize("bucketed", [False, True])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_chunking_does_not_change_results(monkeypatch, bucketed, delta):
    """Row blocks (with a reused buffer and a partial last block) give the one-block results."""
    s, t = _sample(3, 3000, 0.05, True)
    ref_vals = [_run(fn, s, t, bucketed=bucketed, delta=delta) for fn in (rank_sort_loss, ap_loss)]
    monkeypatch.setattr(ranking, "_BLOCK_ELEMS", 1000)  # a few positives per block
    monkeypatch.setattr(ranking, "_POS_BLOCK_ELEMS", 1000)
    for fn, (v0, g0) in zip((rank_sort_loss, ap_loss), ref_vals):
        v1, g1 = _run(fn, s, t, bucketed=bucketed, delta=delta)
        np.testing.assert_allclose(v1, v0, atol=1e-12)
        np.testing.assert_allclose(g1, g0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(1, 300), m=st.integers(0, 2000),
       layout=st.sampled_from(["normal", "grid", "cluster", "tied", "huge", "extreme", "tiny_span"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_bucket_lookup_equals_searchsorted(seed, p, m, layout, dtype):
    """The grid lookup behind the buckets is exactly ``searchsorted(right=True)``, crowded cells included."""
    g = np.random.default_rng(seed)
    a, x = g.normal(size=p), g.normal(scale=2.0, size=m)
    if layout == "grid":  # exact ties between sorted values and queries
        a, x = np.round(a * 4) / 4, np.round(x * 4) / 4
    elif layout == "cluster":  # most values in one tiny interval: crowded cells -> searchsorted fallback
        a[: p * 3 // 4] = 1e-6 * g.normal(size=p * 3 // 4)
        x[: m // 2] = 1e-6 * g.normal(size=m // 2)
    elif layout == "tied":
        a[:] = 0.25
        x[: m // 3] = 0.25
    elif layout == "huge":
        a, x = a * 1e30, x * 1e30
    elif layout == "extreme":  # the span overflows float32
        a, x = np.clip(a * 1e38, -3e38, 3e38), np.clip(x * 1e38, -3e38, 3e38)
    elif layout == "tiny_span":  # span of the sorted values below float32 resolution of the scale
        a = 1.0 + 1e-45 * np.arange(p)
    asc = torch.sort(torch.tensor(a, dtype=dtype)).values
    q = torch.tensor(x, dtype=dtype)
    assert torch.equal(ranking._count_at_or_below(asc, q), torch.searchsorted(asc, q, right=True))


@pytest.mark.parametrize("ties", [False, True])
def test_bucketed_equals_plain_held_out(ties):
    """Held-out seed (not used for tuning), 2 % positives, crowded positives: BRS = RS and BAP = AP at
    delta = 0 (float64, exactly up to summation order) and, without exact ties, to float32 accuracy at
    delta = 1e-7 (a tie has H = 1/2 for any delta > 0 but sits in the bucket above the positive)."""
    g = np.random.default_rng(424242)
    n = 4000
    s = g.normal(size=n)
    pos = g.random(n) < 0.02
    cluster = np.flatnonzero(pos)[: pos.sum() // 2]
    s[cluster] = 0.3 + 1e-9 * g.normal(size=cluster.size)  # crowded positives: the lookup's fallback path
    if ties:
        s = np.round(s * 3) / 3
    t = np.where(pos, g.uniform(0.05, 1.0, n), 0.0)
    t[g.random(n) < 0.05] = -1.0
    for fn, kw in ((rank_sort_loss, {}), (ap_loss, {}), (ap_loss, dict(interpolated=False, self_term=None))):
        v0, g0 = _run(fn, torch.tensor(s), torch.tensor(t), delta=0.0, bucketed=False, **kw)
        v1, g1 = _run(fn, torch.tensor(s), torch.tensor(t), delta=0.0, bucketed=True, **kw)
        np.testing.assert_allclose(v1, v0, atol=1e-12)
        np.testing.assert_allclose(g1, g0, atol=1e-12)
        if ties:
            continue
        s32, t32 = torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)
        v0, g0 = _run(fn, s32, t32, delta=1e-7, bucketed=False, **kw)
        v1, g1 = _run(fn, s32, t32, delta=1e-7, bucketed=True, **kw)
        np.testing.assert_allclose(v1, v0, atol=1e-6)
        np.testing.assert_allclose(g1, g0, atol=1e-6)


@pytest.mark.parametrize("bucketed", [False, True])
def test_all_negative_and_all_positive_inputs(bucketed):
    """No positives: zero losses and gradients. No negatives: ranking loss 0 and the RS sorting terms
    equal the loop oracle's."""
    s = torch.tensor(np.random.default_rng(77).normal(size=40))
    for fn in (rank_sort_loss, ap_loss):
        v, g = _run(fn, s, torch.zeros(40, dtype=s.dtype), bucketed=bucketed)
        assert np.all(v == 0) and np.all(g == 0)
    t = torch.tensor(np.random.default_rng(78).uniform(0.1, 1.0, 40))
    x = s.clone().requires_grad_(True)
    r, so = rank_sort_loss(x, t, bucketed=bucketed)
    (gs,) = torch.autograd.grad(so, x, retain_graph=True)
    (gr,) = torch.autograd.grad(r, x)
    lr, ls, _, gr_ref, gs_ref = _oracle(s.numpy(), t.numpy(), 0.5, 0.5, interpolated=False)
    assert r.item() == lr == 0 and so.item() == pytest.approx(ls, abs=1e-12)
    np.testing.assert_allclose(gs.numpy(), gs_ref, atol=1e-12)
    assert torch.all(gr == 0) and np.all(gr_ref == 0)
    assert ap_loss(s, t, bucketed=bucketed).item() == 0


def test_nonfinite_ignore_drops_entries_and_keeps_shape():
    s, t = _sample(11, 50, 0.2, False)
    s_bad = s.clone()
    s_bad[[3, 4]] = torch.tensor([float("nan"), float("inf")], dtype=s.dtype)
    t_drop = t.clone()
    t_drop[[3, 4]] = -1.0
    for fn in (rank_sort_loss, ap_loss):
        v0, g0 = _run(fn, s, t_drop, bucketed=True)
        v1, g1 = _run(fn, s_bad.reshape(5, 10), t.reshape(5, 10), bucketed=True, nonfinite="ignore")
        np.testing.assert_allclose(v1, v0)
        np.testing.assert_allclose(g1.reshape(-1), g0)


# ---------------------------------------------------------------- heads: targets from a plan, modules


def test_ranking_targets_from_plan_match_loop():
    from deepmot.losses import ranking_targets

    g = torch.Generator().manual_seed(5)
    b, n, gt, k = 2, 7, 3, 4
    plan = torch.rand(b, n, gt + 1, generator=g)
    plan = plan / plan.sum(-1, keepdim=True)
    labels = torch.randint(0, k, (b, gt), generator=g)
    labels[1, 2] = 50  # padded slot
    gt_mask = torch.ones(b, gt, dtype=torch.bool)
    gt_mask[1, 2] = False
    iou = torch.rand(b, n, gt, generator=g)
    pred_mask = torch.ones(b, n, dtype=torch.bool)
    pred_mask[0, 6] = False
    ignore = torch.zeros(b, n, dtype=torch.bool)
    ignore[1, 0] = True
    out = ranking_targets(plan, labels, k, iou=iou, gt_mask=gt_mask, pred_mask=pred_mask, ignore=ignore)
    for bi in range(b):
        for i in range(n):
            for c in range(k):
                want = sum(float(plan[bi, i, j] * iou[bi, i, j]) for j in range(gt)
                           if gt_mask[bi, j] and labels[bi, j] == c)
                if not pred_mask[bi, i] or ignore[bi, i]:
                    want = -1.0
                assert out[bi, i, c].item() == pytest.approx(want, abs=1e-6)


def test_modules_wrap_functions():
    from deepmot.losses import APLoss, RankSortLoss, self_balance_weight

    s, t = _sample(9, 120, 0.1, False)
    r, so = rank_sort_loss(s, t)
    out = RankSortLoss()(s.reshape(4, 30), t.reshape(4, 30))
    assert out["loss_rank"].item() == pytest.approx(r.item()) and out["loss_sort"].item() == pytest.approx(so.item())
    bap = ap_loss(s, t, bucketed=True, interpolated=False, self_term=None)
    assert APLoss.bap()(s, t)["loss_ap"].item() == pytest.approx(bap.item())
    assert APLoss()(s, t)["loss_ap"].item() == pytest.approx(ap_loss(s, t).item())
    w = self_balance_weight(torch.tensor(0.8, requires_grad=True), torch.tensor(0.2, requires_grad=True))
    assert w.item() == pytest.approx(4.0) and not w.requires_grad
    assert self_balance_weight(torch.tensor(0.8), torch.tensor(0.0)).item() == 0.0
