"""The tracking hyper-parameter grid search (``python -m trackers.siamrpn.tune``)."""

from __future__ import annotations

import csv
import re

import pytest

from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS, evaluate_sot
from trackers.siamrpn.tracker import TrackParams
from trackers.siamrpn.tune import grid_points, main, parse_grid

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, SyntheticConfig(num_train=1, num_test=0, width=240, height=160, min_frames=10,
                                            max_frames=10, min_objects=2, max_objects=2), log=lambda s: None)
    return out


def test_grid_parsing_and_combinations():
    grid = parse_grid(["window_influence=0.2,0.3", "long_term=true", "instance_size=191,255"])
    assert grid == {"window_influence": [0.2, 0.3], "long_term": [True], "instance_size": [191, 255]}
    pts = grid_points(grid)
    assert len(pts) == 4 and pts[0] == {"window_influence": 0.2, "long_term": True, "instance_size": 191}
    assert {(p["window_influence"], p["instance_size"]) for p in pts} == {(0.2, 191), (0.2, 255), (0.3, 191), (0.3, 255)}
    assert grid_points({}) == [{}]
    with pytest.raises(ValueError, match="unknown tracking parameter 'windw'"):
        parse_grid(["windw=0.1"])
    with pytest.raises(ValueError, match="name=v1"):
        parse_grid(["window_influence"])


def test_main_scores_every_point_like_evaluate_sot(tiny_data, tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["--weights", str(SYNTHETIC_WEIGHTS), "--data", str(tiny_data), "--grid",
                 "window_influence=0.1,0.6", "--grid", "penalty_k=0.1", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and float(rows[0]["success"]) >= float(rows[1]["success"])   # best first
    model = build_siamrpn("siamrpn_alex_tiny")
    assert load_pysot_checkpoint(model, SYNTHETIC_WEIGHTS).ok
    for r in rows:
        params = TrackParams.from_config(model.cfg, window_influence=float(r["window_influence"]), penalty_k=0.1)
        ref = evaluate_sot(model, tiny_data, "train", params=params)
        assert float(r["success"]) == pytest.approx(ref["success"], abs=1e-4)
        assert int(r["frames"]) == ref["frames"] > 0
    printed = capsys.readouterr().out
    assert "window_influence" in printed
    assert "success_%,mean_iou_%" in printed                          # a person reads percent
    assert re.search(r"success=\d+\.\d{3}%", printed)
