"""DeepMOT fine-tuning of Tracktor through the trainable-tracker protocol: only the box-regression
layer moves, the loss is finite, a preempted run resumes bit for bit, and the handed-back weights
load into evaluate.py's Tracktor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from deepmot.config import load_config
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.engine import deepmot_train as dt
from deepmot.engine.deepmot_config import DeepMOTTrainConfig
from trackers import get_tracker
from trackers.tracktor.trainable import SHIPPED_DETECTOR, TRAINED, jitter_boxes

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not SHIPPED_DETECTOR.is_file(), reason="shipped detector weights absent")]
BUILD = get_tracker("tracktor").build_trainable


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracktor_train")
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=1, num_test=1, num_val=0, width=320, height=180,
                                             min_frames=7, max_frames=7, min_objects=3, max_objects=4,
                                             static_persons=0, reflections=0))
    return root


def _cfg(data: Path, runs: Path, **extra) -> DeepMOTTrainConfig:
    base = {"tracker": "tracktor", "data": str(data), "runs_root": str(runs), "seq_len": 3, "num_repeats": 1,
            "epochs": 1, "log_every": 1, "eval_every": 0, "eval_before": False, "eval_after": False,
            "threads": 1, "refresh_every": 0, "train_detections": ["SDP"], "w_focal": 0.0, "w_ids": 0.0,
            "delta": 0.5, "temperature": 100.0, "lr": 1e-3, "shipped_baseline": False, "name": "tt"}
    base.update(extra)
    return load_config(DeepMOTTrainConfig, None,
                       [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                        for k, v in base.items()])


def test_jitter_keeps_boxes_valid_and_is_seeded():
    boxes = torch.tensor([[10.0, 20.0, 40.0, 100.0]]).repeat(200, 1)
    a = jitter_boxes(boxes, torch.Generator().manual_seed(0))
    b = jitter_boxes(boxes, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    moved = (a - boxes.double()).abs().sum(1) > 1e-9
    assert 0.4 < moved.float().mean() < 0.9                 # p = 0.4 shift, p = 0.4 scale
    size = a[:, 2:] - a[:, :2]
    assert (size > 0).all() and (size / torch.tensor([30.0, 80.0]) <= 1.5 + 1e-9).all()


def test_fine_tuning_trains_only_the_box_regression_and_resumes_exactly(data, tmp_path, monkeypatch):
    import csv

    from trackers.tracktor.model import load_tracktor_net

    ref = dt.run(_cfg(data, tmp_path / "a"), BUILD)

    before = load_tracktor_net(SHIPPED_DETECTOR).state_dict()
    after_path = Path(ref["run_dir"]) / "tracktor_deepmot.pth"
    after = torch.load(after_path, weights_only=True)
    changed = sorted(k for k, v in after.items() if isinstance(v, torch.Tensor) and not torch.equal(v, before[k]))
    assert changed == sorted(TRAINED)
    with open(Path(ref["run_dir"]) / "metrics.csv") as f:
        losses = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "train/loss"]
    assert len(losses) >= 3 and torch.isfinite(torch.tensor(losses)).all() and max(losses) > 0
    # the handed-back weights track through evaluate.py's loader
    net = load_tracktor_net(after_path)
    assert torch.equal(net.state_dict()[TRAINED[0]], after[TRAINED[0]])

    # preempted after the first clip batch, then resumed: the same weights, bit for bit
    real_guard = dt.PreemptionGuard

    class StopOnce(real_guard):
        calls = 0

        @property
        def requested(self):
            StopOnce.calls += 1
            return StopOnce.calls == 1

    monkeypatch.setattr(dt, "PreemptionGuard", StopOnce)
    with pytest.raises(SystemExit):
        dt.run(_cfg(data, tmp_path / "b"), BUILD)
    (run_dir,) = list((tmp_path / "b" / "tt").iterdir())
    stopped = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < stopped["step"] < torch.load(Path(ref["run_dir"]) / "checkpoints" / "last.pt",
                                            weights_only=True)["step"]
    monkeypatch.setattr(dt, "PreemptionGuard", real_guard)
    resumed = dt.run(_cfg(data, tmp_path / "b"), BUILD, resume=str(run_dir))
    assert "resumed at epoch 0, batch 1, step 2" in (run_dir / "log.txt").read_text()
    with open(run_dir / "metrics.csv") as f:
        steps = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["key"] == "train/loss"]
    assert [v for _, v in steps] == losses and [k for k, _ in steps] == list(range(1, len(losses) + 1))
    again = torch.load(Path(resumed["run_dir"]) / "tracktor_deepmot.pth", weights_only=True)
    for k, v in after.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, again[k]), k


def test_train_cli_defaults_to_the_tracktor_config(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry_tt", REPO / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.chdir(tmp_path)                      # no data/MOT17 here: the synthetic config
    assert cli.default_config_path(None, "tracktor").endswith("deepmot_tracktor_synthetic.yaml")
    assert cli.default_config_path("/some/MOT17", "tracktor").endswith("deepmot_tracktor.yaml")
    assert cli.default_config_path(None).endswith("deepmot_siamrpn_synthetic.yaml")
    cfg = cli.config_from_args(cli.build_parser().parse_args(["--tracker", "tracktor"]))
    assert (cfg.tracker, cfg.seq_len, cfg.lr, cfg.w_ids, cfg.delta) == ("tracktor", 10, 1e-4, 0.0, 0.5)


def test_final_report_with_validation_and_the_shipped_row(data, tmp_path):
    """The loop's whole final report (start / shipped / after on validation, test once) runs on a
    TracktorNet, whose state dict carries a non-tensor entry (its architecture)."""
    import json

    cfg = _cfg(data, tmp_path, eval_before=True, eval_after=True, shipped_baseline=True, max_steps=2,
               validation={"split": "test", "frames": "full", "detections": ["SDP"], "mot": ["cmc_scale=0.5"]},
               test={"split": "test", "frames": "full", "detections": ["SDP"], "mot": []})
    out = dt.run(cfg, BUILD)
    report = json.loads((Path(out["run_dir"]) / "report.json").read_text())
    rows = {r["label"]: r["metrics"] for r in report["rows"]}
    assert list(rows) == ["start", "shipped", "after"] and all(m is not None and "MOTA" in m for m in rows.values())
    assert rows["shipped"]["MOTA"] == rows["start"]["MOTA"]       # the start is the shipped detector
    assert report["test"] is not None and "MOTA" in report["test"]
    assert (Path(out["run_dir"]) / "tracktor_deepmot.pth").is_file()
