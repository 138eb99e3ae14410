"""DeepMOT criterion: gradients, edge cases, IDS variants against literal loops, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmot.boxes import box_iou, deepmot_distance
from deepmot.criterion import DeepMOTLoss, IdentityMemory
from deepmot.dhn.model import WEIGHTS_DIR, DEFAULT_WEIGHTS, DeepHungarianNet

IMAGE = (640.0, 480.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_dhn(d: torch.Tensor) -> torch.Tensor:
    """Smooth stand-in for the DHN: close pairs -> near 1, far (or gated, d >= 1) -> near 0."""
    return torch.sigmoid(6.0 * (0.6 - d))


def make_frame(seed: int, n: int, m: int, dtype=torch.float64):
    """Random GT ``(m, 4)`` and tracks ``(n, 4)``; the first min(n, m) tracks follow GT."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(m, 2, generator=g, dtype=dtype) * 200 + 100
    s = torch.rand(m, 2, generator=g, dtype=dtype) * 40 + 40
    gt = torch.cat((c - s / 2, c + s / 2), 1)
    k = min(n, m)
    tr = torch.cat((gt[:k] + torch.randn(k, 4, generator=g, dtype=dtype) * 4,
                    torch.rand(n - k, 2, generator=g, dtype=dtype).repeat(1, 2) * 200
                    + torch.tensor([100, 100, 150, 160], dtype=dtype)), 0)
    return tr, gt


def away_from_kinks(tr: torch.Tensor, gt: torch.Tensor) -> bool:
    """No IoU near the 0.5 gate and no box pair near touching (IoU's max(0, .) kink)."""
    iou = box_iou(tr, gt)
    lo = torch.minimum(tr[:, None, 2:], gt[None, :, 2:]) - torch.maximum(tr[:, None, :2], gt[None, :, :2])
    return bool(((iou - 0.5).abs() > 1e-3).all() and (lo.abs() > 1e-3).all())


# ---------------------------------------------------------------- literal loop references
def ids_loop(assign, track_ids, gt_ids, prev, delta, temp, mode="paper", dead_tracks=True):
    """IDS by the case analysis of specs/deepmot.md §5.3, one object at a time (reference)."""
    n, m = assign.shape
    cc = torch.softmax(torch.cat((assign * temp, torch.full((1, m), delta * temp, dtype=assign.dtype))), 0)
    s = cc[:n]
    total = 0.0
    for j in range(m):
        g = int(gt_ids[j])
        missed = int(cc[:, j].argmax()) == n
        col = s[:, j]
        if g not in prev:
            if mode == "v1" and missed:                       # case A3
                total += float(col.sum())
            continue
        rows = [i for i in range(n) if int(track_ids[i]) == prev[g]]
        if rows:                                              # A1 / B1 / C
            total += float(col.sum() - col[rows[0]])
        elif dead_tracks:                                     # A1 / B2, previous track gone
            total += float(col.sum())
    return total


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_float64_smooth_dhn(seed):
    tr, gt = make_frame(seed, 5, 4)
    for bump in range(50):                                    # deterministic retry off the kinks
        if away_from_kinks(tr, gt):
            break
        tr, gt = make_frame(1000 * seed + bump + 1, 5, 4)
    assert away_from_kinks(tr, gt)
    track_ids, gt_ids = [10, 11, 12, 13, 14], [1, 2, 3, 4]
    # Object 1 remembers track 11 (a switch candidate), object 2 a dead track, 3 track 12.
    mem = IdentityMemory().update(torch.tensor([1, 2, 3]), torch.tensor([11, 99, 12]))
    crit = DeepMOTLoss(smooth_dhn, iou_threshold=0.3, temperature=10.0)

    def f(boxes):
        o = crit(boxes, track_ids, gt, gt_ids, IMAGE, mem)
        return o.loss, o.fp, o.fn, o.ids, o.dmotp

    out = f(tr)
    assert out[3].item() > 0 and out[4].item() > 0
    assert torch.autograd.gradcheck(f, (tr.clone().requires_grad_(),), eps=1e-6, atol=1e-5)


def test_random_dhn_gradients_reach_boxes_and_dhn_stays_frozen():
    torch.manual_seed(0)
    dhn = DeepHungarianNet(hidden_size=16)
    crit = DeepMOTLoss(dhn)
    crit.train()
    assert not dhn.training and all(not p.requires_grad for p in dhn.parameters())
    tr, gt = make_frame(3, 6, 5, torch.float32)
    tr.requires_grad_(True)
    out = crit(tr, range(6), gt, range(5), IMAGE)
    (out.dmota).backward()                                    # through the DHN only
    assert tr.grad is not None and torch.isfinite(tr.grad).all() and tr.grad.abs().sum() > 0
    assert all(p.grad is None for p in dhn.parameters())


@pytest.mark.skipif(not (WEIGHTS_DIR / DEFAULT_WEIGHTS).is_file(),
                    reason="shipped DHN weights not trained yet (deepmot/dhn/weights/dhn.pt)")
def test_pretrained_dhn_gradients_reach_boxes():
    crit = DeepMOTLoss(DeepHungarianNet.pretrained())
    tr, gt = make_frame(4, 6, 5, torch.float32)
    tr.requires_grad_(True)
    crit(tr, range(6), gt, range(5), IMAGE).loss.backward()
    assert torch.isfinite(tr.grad).all() and tr.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_and_backpropagates_through_frozen_dhn():
    torch.manual_seed(0)
    dhn = DeepHungarianNet(hidden_size=16)
    tr, gt = make_frame(5, 6, 5, torch.float32)
    cpu = DeepMOTLoss(dhn)(tr, range(6), gt, range(5), IMAGE)
    trc = tr.cuda().requires_grad_(True)
    gpu = DeepMOTLoss(dhn.cuda())(trc, range(6), gt.cuda(), range(5), IMAGE)
    gpu.loss.backward()
    assert torch.allclose(gpu.loss.cpu(), cpu.loss, atol=1e-4)
    assert torch.isfinite(trc.grad).all() and trc.grad.abs().sum() > 0


def test_float32_and_float64_agree():
    tr, gt = make_frame(6, 5, 5)
    mem = IdentityMemory().update(torch.tensor([0, 1]), torch.tensor([1, 0]))
    crit = DeepMOTLoss(smooth_dhn)
    o64 = crit(tr, range(5), gt, range(5), IMAGE, mem)
    o32 = crit(tr.float(), range(5), gt.float(), range(5), IMAGE, mem)
    assert o32.loss.dtype == torch.float32 and o64.loss.dtype == torch.float64
    for a, b in [(o32.loss, o64.loss), (o32.ids, o64.ids), (o32.fp, o64.fp)]:
        assert abs(a.item() - b.item()) < 1e-4
    assert torch.equal(o32.tp_mask, o64.tp_mask)


# ---------------------------------------------------------------- values vs literal formulas
@pytest.mark.parametrize("mode,dead", [("paper", True), ("paper", False), ("v1", True), ("v1", False)])
@pytest.mark.parametrize("seed", range(8))
def test_ids_matches_literal_case_analysis(mode, dead, seed):
    g = torch.Generator().manual_seed(seed)
    n, m = int(torch.randint(1, 7, (1,), generator=g)), int(torch.randint(1, 7, (1,), generator=g))
    tr, gt = make_frame(seed, n, m)
    track_ids = torch.randperm(10, generator=g)[:n] + 100
    gt_ids = torch.randperm(10, generator=g)[:m]
    # Memory: some objects remember present tracks, some dead tracks, some nothing.
    known = gt_ids[torch.rand(m, generator=g) < 0.7]
    choices = torch.cat((track_ids, torch.tensor([990, 991])))
    prev = choices[torch.randint(len(choices), (len(known),), generator=g)]
    mem = IdentityMemory().update(known, prev)
    # A soft assignment with real decisions: sharpened so that some columns are missed.
    dhn = lambda d: torch.sigmoid(8.0 * (0.45 - d))  # noqa: E731
    crit = DeepMOTLoss(dhn, iou_threshold=None, delta=0.5, temperature=10.0, ids_mode=mode,
                       ids_dead_tracks=dead)
    out = crit(tr, track_ids, gt, gt_ids, IMAGE, mem)
    ref = ids_loop(out.assignment.detach(), track_ids, gt_ids, mem.as_dict(), 0.5, 10.0, mode, dead)
    assert out.ids.item() == pytest.approx(ref, abs=1e-10)
    # FP/FN and dMOTA from the definitions.
    a = out.assignment.detach()
    cr = torch.softmax(torch.cat((a, torch.full((n, 1), 0.5, dtype=a.dtype)), 1) * 10, 1)
    cc = torch.softmax(torch.cat((a, torch.full((1, m), 0.5, dtype=a.dtype)), 0) * 10, 0)
    assert out.fp.item() == pytest.approx(cr[:, -1].sum().item(), abs=1e-12)
    assert out.fn.item() == pytest.approx(cc[-1].sum().item(), abs=1e-12)
    assert out.dmota.item() == pytest.approx((out.fp + out.fn + out.ids).item() / m, abs=1e-12)
    d = deepmot_distance(tr, gt, IMAGE)
    if out.tp_mask.any():
        assert out.dmotp.item() == pytest.approx(d[out.tp_mask].mean().item(), abs=1e-12)
    assert out.loss.item() == pytest.approx(out.dmota.item() + 5 * out.dmotp.item(), abs=1e-12)


def test_dead_track_and_new_object_scenario():
    """Frame 1: object 1 <- track 10. Frame 2: track 10 gone, track 11 on object 1, new object 2."""
    exact = lambda d: (d < 0.5).to(d.dtype)  # noqa: E731  (frames below are unambiguous)
    gt1 = torch.tensor([[100.0, 100, 150, 200]], dtype=torch.float64)
    gt2 = torch.tensor([[102.0, 100, 152, 200], [400, 100, 450, 200]], dtype=torch.float64)
    for dead, expected in [(True, 1.0), (False, 0.0)]:
        crit = DeepMOTLoss(exact, temperature=1000.0, ids_dead_tracks=dead)
        o1 = crit(gt1 + 1, [10], gt1, [1], IMAGE)
        assert o1.ids.item() == 0 and o1.memory.as_dict() == {1: 10}
        o2 = crit(gt2 + 1, [11, 12], gt2, [1, 2], IMAGE, o1.memory)
        assert o2.ids.item() == pytest.approx(expected, abs=1e-9)
        assert o2.memory.as_dict() == {1: 11, 2: 12}
        # Frame 3: object 1 absent; its memory is kept (CLEAR-MOT has no expiry).
        o3 = crit(gt2[1:] + 1, [12], gt2[1:], [2], IMAGE, o2.memory)
        assert o3.ids.item() == 0 and o3.memory.as_dict() == {1: 11, 2: 12}


# ---------------------------------------------------------------- edge cases
@pytest.mark.parametrize("n,m", [(0, 3), (3, 0), (0, 0)])
def test_empty_frames(n, m):
    tr, gt = make_frame(7, max(n, 1), max(m, 1))
    tr, gt = tr[:n].clone().requires_grad_(True), gt[:m]
    mem = IdentityMemory().update(torch.tensor([5]), torch.tensor([50]))
    dhn = DeepHungarianNet(hidden_size=8).double()
    out = DeepMOTLoss(dhn)(tr, list(range(n)), gt, list(range(m)), IMAGE, mem)
    out.loss.backward()
    assert tr.grad is not None and (tr.grad == 0).all()
    assert out.fp.item() == pytest.approx(n if m == 0 else 0)
    assert out.fn.item() == pytest.approx(m if n == 0 else 0)
    assert out.ids.item() == 0 and out.dmotp.item() == 0
    assert out.loss.item() == pytest.approx(1.0 if m else 0.0)   # all missed / no GT
    assert out.tp_mask.shape == (n, m) and not out.tp_mask.any()
    assert out.memory.as_dict() == {5: 50}


def test_nan_and_inf_boxes_name_the_track_index():
    tr, gt = make_frame(8, 4, 3)
    crit = DeepMOTLoss(smooth_dhn)
    for bad in (float("nan"), float("inf")):
        t = tr.clone()
        t[2, 1] = bad
        with pytest.raises(ValueError, match="track index 2"):
            crit(t, range(4), gt, range(3), IMAGE)
    g = gt.clone()
    g[1, 3] = float("nan")
    with pytest.raises(ValueError, match="gt index 1"):
        crit(tr, range(4), g, range(3), IMAGE)


def test_bad_inputs_raise_clear_errors():
    tr, gt = make_frame(9, 3, 3)
    crit = DeepMOTLoss(smooth_dhn)
    with pytest.raises(ValueError, match="unique"):
        crit(tr, [1, 1, 2], gt, range(3), IMAGE)
    with pytest.raises(ValueError, match="track ids"):
        crit(tr, [1, 2], gt, range(3), IMAGE)
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        crit(tr[:, :3], range(3), gt, range(3), IMAGE)
    with pytest.raises(ValueError, match="ids_mode"):
        DeepMOTLoss(smooth_dhn, ids_mode="v3")
    with pytest.raises(ValueError, match="dhn returned shape"):
        DeepMOTLoss(lambda d: d[:, :1])(tr, range(3), gt, range(3), IMAGE)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 50)), max_size=6), max_size=6),
       st.lists(st.integers(0, 12), max_size=8))
def test_identity_memory_is_a_dict_of_last_matches(updates, queries):
    mem, ref = IdentityMemory(), {}
    for frame in updates:
        pairs = dict(frame)                                  # unique GT ids within a frame
        mem = mem.update(torch.tensor(list(pairs), dtype=torch.int64),
                         torch.tensor(list(pairs.values()), dtype=torch.int64))
        ref.update(pairs)
        assert mem.as_dict() == ref
    q = torch.tensor(queries, dtype=torch.int64)
    known, track = mem.lookup(q)
    assert known.tolist() == [x in ref for x in queries]
    assert [t for t, k in zip(track.tolist(), known.tolist()) if k] == [ref[x] for x in queries if x in ref]
