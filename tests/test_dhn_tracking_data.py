"""Real-geometry DHN data: targets are the exact gated matching (brute force), distance and gate
are the criterion's, streams resume exactly, fixture frames are read completely."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.dhn.data import DHNDataConfig, batch_stream
from deepmot.dhn.tracking_data import (BoxPair, TrackingPool, jittered_pair, mixed_stream, results_pairs,
                                       sample_from_pair)


def _iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference IoU written out in numpy (no torchvision)."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def _brute_force(d: np.ndarray, allowed: np.ndarray) -> set[tuple[int, int]]:
    """Most allowed pairs, then least total distance, by enumerating every partial matching."""
    n, m = d.shape
    best, best_key = set(), (0, 0.0)
    for k in range(1, min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                if all(allowed[r, c] for r, c in zip(rows, cols)):
                    key = (k, -sum(d[r, c] for r, c in zip(rows, cols)))
                    if key > best_key:
                        best, best_key = set(zip(rows, cols)), key
    return best


def test_frame_samples_use_criterion_distance_gate_and_exact_targets():
    rng = np.random.default_rng(5)
    size = (640.0, 360.0)
    checked = 0
    for _ in range(60):
        m = int(rng.integers(1, 5))
        xy = rng.uniform(0, 500, (m, 2))
        wh = rng.uniform(20, 120, (m, 2))
        gt = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
        pair = jittered_pair(rng, gt, size, n=int(rng.integers(1, 5)))
        thr = float(rng.choice([0.3, 0.5, 0.7]))
        s = sample_from_pair(pair, thr)
        h, g = pair.hyp.double().numpy(), gt.double().numpy()
        iou = _iou_np(h, g)
        np.testing.assert_array_equal(s.forbidden.numpy(), iou < thr)
        # DeepMOT distance written out: 0.5 * ((1 - exp(-5 |dc| / diag)) + (1 - IoU))
        dc = ((h[:, None, :2] + h[:, None, 2:]) - (g[None, :, :2] + g[None, :, 2:])) / 2
        ref = 0.5 * ((1 - np.exp(-5 * np.linalg.norm(dc, axis=-1) / np.hypot(*size))) + (1 - iou))
        np.testing.assert_allclose(s.distance.numpy(), ref, atol=1e-5)
        ours = {tuple(map(int, rc)) for rc in torch.nonzero(s.target).tolist()}
        assert ours == _brute_force(s.distance.double().numpy(), ~s.forbidden.numpy())
        checked += len(ours) > 0 and bool(s.forbidden.any())
    assert checked > 10


def test_jittered_pair_drops_and_adds_boxes():
    rng = np.random.default_rng(0)
    gt = torch.tensor([[10.0 + 40 * k, 20.0, 40.0 + 40 * k, 100.0] for k in range(10)])
    sizes = set()
    for _ in range(30):
        p = jittered_pair(rng, gt, (640.0, 360.0))
        assert p.hyp.shape[1] == 4 and torch.isfinite(p.hyp).all()
        assert torch.all(p.hyp[:, 2:] - p.hyp[:, :2] >= 2.0 - 1e-4)
        sizes.add(p.hyp.shape[0])
    assert min(sizes) < 10 < max(sizes)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=1, num_test=0, width=160, height=96,
                                             min_frames=12, max_frames=12, min_objects=3, max_objects=5))
    return root


def test_pool_batches_are_exact_same_shape_subsets_and_deterministic(tiny_root):
    pool = TrackingPool.from_dataset(tiny_root, "train", jitter_share=0.3)
    sources = {p.source for p in pool.pairs}
    assert "det" in sources and any(s.startswith("lag") for s in sources)
    cfg = DHNDataConfig(elements_per_batch=64, max_size=8)
    for k in range(6):
        b = pool.make_batch(1, 0, k, cfg, 8)
        again = pool.make_batch(1, 0, k, cfg, 8)
        assert torch.equal(b.input, again.input) and torch.equal(b.target, again.target)
        assert b.input.dim() == 3 and max(b.input.shape[1:]) <= 8
        assert torch.all((b.input >= 1.0) == b.forbidden)
        assert not torch.any(b.target.bool() & b.forbidden)
        assert torch.all(b.target.sum(1) <= 1) and torch.all(b.target.sum(2) <= 1)


def test_mixed_stream_resumes_and_share_zero_is_the_random_stream(tiny_root):
    pool = TrackingPool.from_dataset(tiny_root, "train")
    cfg = DHNDataConfig(elements_per_batch=64, max_size=8)
    full = mixed_stream(2, 0, 0, cfg, pool, 0.5)
    batches = [next(full) for _ in range(6)]
    resumed = next(mixed_stream(2, 0, 4, cfg, pool, 0.5))
    assert torch.equal(resumed.input, batches[4].input)
    plain, rand = mixed_stream(2, 0, 0, cfg, pool, 0.0), batch_stream(2, 0, 0, cfg)
    for _ in range(3):
        assert torch.equal(next(plain).input, next(rand).input)


def test_results_pairs_read_every_scored_box_of_the_fixture(fixtures_dir):
    seq = fixtures_dir / "mot17" / "train" / "MOT17-09-SDP"
    res = fixtures_dir / "mot17" / "results" / "Lif_T" / "MOT17-09-SDP.txt"
    pairs = results_pairs(seq / "gt" / "gt.txt", res, (1920.0, 1080.0))
    gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    rs = np.loadtxt(res, delimiter=",")
    scored = gt[(gt[:, 7] == 1) & (gt[:, 6] == 1)]
    frames = sorted(set(scored[:, 0].astype(int)) & set(rs[:, 0].astype(int)))
    assert len(pairs) == len(frames)
    assert sum(p.gt.shape[0] for p in pairs) == int(np.isin(scored[:, 0], frames).sum())
    assert sum(p.hyp.shape[0] for p in pairs) == int(np.isin(rs[:, 0], frames).sum())
    first = rs[rs[:, 0] == frames[0]][0, 2:6]
    assert torch.allclose(pairs[0].hyp[0], torch.tensor([first[0], first[1], first[0] + first[2],
                                                         first[1] + first[3]], dtype=torch.float32))


def test_box_pair_with_no_hypotheses_is_an_empty_sample():
    s = sample_from_pair(BoxPair(torch.zeros(0, 4), torch.tensor([[0.0, 0, 10, 20]]), (64.0, 64.0), "det"))
    assert s.target.shape == (0, 1) and s.target.sum() == 0
