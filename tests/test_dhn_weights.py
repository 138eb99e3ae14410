"""The shipped DHN weights: a plain-types checkpoint that loads, records its config, and beats
the row-argmin baseline against the exact gated Hungarian on held-out matrices."""

from __future__ import annotations

import torch

from deepmot.dhn.data import heldout_set
from deepmot.dhn.metrics import evaluate_model
from deepmot.dhn.model import DEFAULT_WEIGHTS, WEIGHTS_DIR, DeepHungarianNet

#: floor of the row-wise exact rate on MOT17-09-SDP Lif_T results (BENCHMARKS.md, real geometry)
SHIPPED_REAL_EXACT = 0.98


def test_shipped_weights_load_plain_and_small():
    path = WEIGHTS_DIR / DEFAULT_WEIGHTS
    assert path.is_file(), f"shipped DHN weights missing: {path}"
    assert path.stat().st_size < 20 * 2**20
    obj = torch.load(path, weights_only=True)
    assert set(obj["model_config"]) >= {"hidden_size", "num_layers", "head_dims", "head_activation"}
    model = DeepHungarianNet.pretrained()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config.hidden_size == obj["model_config"]["hidden_size"]


def test_shipped_weights_beat_row_argmin_on_small_heldout_matrices():
    # a held-out draw with a seed different from the validation seed used during training
    samples = heldout_set(seed=777, count=100, max_size=10)
    res = evaluate_model(DeepHungarianNet.pretrained(), samples)
    assert res["dhn_row"]["all"]["exact"] > res["baseline"]["all"]["exact"] + 0.05
    assert res["dhn_row"]["all"]["wa"] > 0.95


def test_shipped_weights_on_real_tracker_results_never_below_row_argmin(fixtures_dir):
    # real geometry: Lif_T's MOT17-09-SDP results against the scored GT, IoU gate 0.5 (bench/dhn.py --eval)
    from deepmot.dhn.tracking_data import results_pairs, sample_from_pair

    root = fixtures_dir / "mot17"
    pairs = results_pairs(root / "train" / "MOT17-09-SDP" / "gt" / "gt.txt",
                          root / "results" / "Lif_T" / "MOT17-09-SDP.txt", (1920.0, 1080.0))
    assert len(pairs) == 525
    res = evaluate_model(DeepHungarianNet.pretrained(), [sample_from_pair(p) for p in pairs])
    assert res["dhn_row"]["all"]["exact"] >= res["baseline"]["all"]["exact"]
    assert res["dhn_row"]["all"]["exact"] >= SHIPPED_REAL_EXACT
