"""DHN training data: exact targets equal motmetrics' matching; gating convention; streams."""

from __future__ import annotations

import motmetrics as mm
import numpy as np
import pandas as pd
import torch

from deepmot.boxes import GATE_OFFSET
from deepmot.dhn.data import DHNDataConfig, batch_stream, generate_matrix, heldout_set, make_batch


def _motmetrics_matches(distance: np.ndarray, forbidden: np.ndarray) -> set[tuple[int, int]]:
    """(track, gt) pairs py-motmetrics matches when the frame is fed with NaN on forbidden pairs."""
    n, m = distance.shape
    acc = mm.MOTAccumulator(auto_id=True)
    d = distance.astype(np.float64).copy()
    d[forbidden] = np.nan
    acc.update(list(range(m)), list(range(n)), d.T)  # motmetrics: rows = objects, cols = hyps
    ev = acc.mot_events
    match = ev[ev.Type == "MATCH"]
    return {(int(h), int(o)) for o, h in zip(match.OId, match.HId) if not pd.isna(h)}


def test_targets_equal_motmetrics_on_500_random_gated_matrices():
    rng = np.random.default_rng(7)
    cfg = DHNDataConfig(max_size=12, ungated_share=0.15)
    checked_gated = 0
    for i in range(500):
        n, m = (int(v) for v in rng.integers(1, 13, 2))
        s = generate_matrix(rng, n, m, cfg)
        ours = {(int(r), int(c)) for r, c in torch.nonzero(s.target).tolist()}
        assert ours == _motmetrics_matches(s.distance.double().numpy(), s.forbidden.numpy()), i
        checked_gated += bool(s.forbidden.any())
    assert checked_gated > 200  # most of them really are gated


def test_gating_convention_and_target_validity():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, m = (int(v) for v in rng.integers(1, 16, 2))
        s = generate_matrix(rng, n, m)
        g = s.gated
        assert torch.all((g >= 1.0) == s.forbidden)            # forbidden <=> entry >= 1
        assert torch.allclose(g[s.forbidden], s.distance[s.forbidden] + GATE_OFFSET)
        assert torch.all((s.distance >= 0) & (s.distance < 1))
        assert not torch.any(s.target.bool() & s.forbidden)     # never matches a forbidden pair
        assert torch.all(s.target.sum(0) <= 1) and torch.all(s.target.sum(1) <= 1)


def test_stream_is_deterministic_bucketed_and_rank_specific():
    cfg = DHNDataConfig(elements_per_batch=256, max_size=12)
    a = make_batch(5, 0, 11, cfg)
    b = make_batch(5, 0, 11, cfg)
    c = make_batch(5, 1, 11, cfg)
    assert torch.equal(a.input, b.input) and torch.equal(a.target, b.target)
    assert a.input.shape != c.input.shape or not torch.equal(a.input, c.input)
    bsz, n, m = a.input.shape
    assert 1 <= bsz <= cfg.max_batch and max(n, m) <= 12
    stream = batch_stream(5, 0, start=11, cfg=cfg, max_size_at=lambda k: 4)
    first = next(stream)
    assert max(first.input.shape[1:]) <= 4


def test_heldout_is_fixed_gated_and_spread_over_buckets():
    a = heldout_set(seed=1, count=40, max_size=30)
    b = heldout_set(seed=1, count=40, max_size=30)
    assert all(torch.equal(x.distance, y.distance) for x, y in zip(a, b))
    sizes = [max(s.distance.shape) for s in a]
    assert min(sizes) <= 5 and max(sizes) > 20
    assert sum(bool(s.forbidden.any()) for s in a) > 30
