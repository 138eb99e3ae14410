"""Detector data, COCO evaluation, ``train.py --detector`` (resume exactness) and ``evaluate.py --detector``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmot.datasets import SyntheticConfig, generate_synthetic
from deepmot.datasets.mot import read_detections
from trackers.detection.data import FrameSet, flip
from trackers.detection.evaluate import coco_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detdata")
    generate_synthetic(root, SyntheticConfig(num_train=1, num_test=1, width=192, height=128, min_frames=8,
                                             max_frames=8, min_objects=2, max_objects=4))
    return root


def _gt(boxes, ignore=(), vis=None):
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": b, "ignore": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "vis": torch.ones(len(b)) if vis is None else torch.tensor(vis)}


def test_ap_of_gt_used_as_detections_is_one():
    gts = [_gt([[10, 10, 50, 100], [100, 20, 140, 120]], [[200, 0, 300, 150]], [0.9, 0.3]),
           _gt([[30, 30, 70, 130]], vis=[0.6]), _gt([])]
    dets = [{"boxes": g["boxes"], "scores": torch.linspace(0.9, 0.6, len(g["boxes"]))} for g in gts]
    m = coco_metrics(gts, dets, vis_buckets=True)
    for k in ("AP", "AP50", "AP75", "recall", "precision@thr", "recall@thr"):
        assert m[k] == pytest.approx(1.0), k
    assert m["AP50_vis0.25-0.50"] == pytest.approx(1.0) and m["num_gt_vis0.25-0.50"] == 1
    assert np.isnan(m["AP50_vis0.00-0.25"])  # no GT in the bucket: undefined, not 0 or 1


def test_ignore_regions_are_neither_tp_nor_fp():
    gts = [_gt([[10, 10, 50, 100]], [[200, 0, 300, 150]])]
    on_ignore = {"boxes": torch.tensor([[10.0, 10, 50, 100], [210, 10, 260, 140]]), "scores": torch.tensor([0.6, 0.9])}
    m = coco_metrics(gts, [on_ignore])
    assert m["AP50"] == pytest.approx(1.0) and m["precision@thr"] == 1.0 and m["recall@thr"] == 1.0
    elsewhere = {"boxes": torch.tensor([[10.0, 10, 50, 100], [400, 10, 450, 140]]), "scores": torch.tensor([0.6, 0.9])}
    m = coco_metrics(gts, [elsewhere])
    assert m["precision@thr"] == pytest.approx(0.5) and m["AP50"] < 1.0


def test_frames_split_positives_and_ignore_regions(tiny_data):
    fs = FrameSet(tiny_data, "train")
    seq = next(iter(fs.sequences.values()))
    rows = seq.gt_rows
    image, target = fs[0]
    assert image.shape == (3, 128, 192) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    f = seq.frame(fs.keys[0][1])
    n_pos = int(((f.gt_cls == 1) & (f.gt_flag == 1)).sum())
    assert len(target["boxes"]) <= n_pos and (target["labels"] == 1).all()
    assert len(rows.cls) and set(np.unique(rows.cls)) >= {1}
    n_ign = sum(len(fs[i][1]["ignore"]) for i in range(len(fs)))
    assert n_ign > 0  # static persons / reflections (class 7 / 12, flag 0) become ignore regions
    flipped_image, flipped = flip(image, target)
    torch.testing.assert_close(flip(flipped_image, flipped)[1]["boxes"], target["boxes"])
    assert torch.equal(flipped_image[..., 0], image[..., -1])


def _train(args, cwd: Path):
    return subprocess.run([sys.executable, str(REPO / "train.py"), "--detector", *args], cwd=cwd, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=600)


def _evaluate(args):
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=600)


SMALL = ["--set", "model.min_size=96", "--set", "model.max_size=192", "--set", "data.scales=[1.0]",
         "--set", "warmup_steps=1", "--set", "num_threads=1", "--set", "log_every=1", "--set", "checkpoint_every=2",
         "--set", "model.rpn_post_nms_test=50", "--set", "schedule=step", "--set", "gamma=1.0"]
# (a constant rate after warm-up: a 2-step run and a 4-step run then share their schedule)


@pytest.mark.slow
def test_train_detector_cli_resumes_exactly_and_evaluates(tiny_data, tmp_path):
    full = _train(["--data", str(tiny_data), "--name", "full", *SMALL, "--set", "steps=4"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "test AP" in full.stdout
    part = _train(["--data", str(tiny_data), "--name", "part", *SMALL, "--set", "steps=2",
                   "--set", "test_at_end=false"], tmp_path)
    assert part.returncode == 0, part.stderr[-3000:]
    part_dir = next((tmp_path / "runs" / "part").iterdir())
    res = _train(["--resume", str(part_dir), "--set", "steps=4"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    full_dir = next((tmp_path / "runs" / "full").iterdir())
    a = torch.load(full_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert (full_dir / "metrics.csv").read_text().count("val/AP") >= 1

    out = tmp_path / "dets"
    ckpt = full_dir / "checkpoints" / "last.pt"
    ev = _evaluate(["--detector", str(ckpt), "--data", str(tiny_data), "--split", "test", "--out", str(out),
                    "--threads", "1"])
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "AP50" in ev.stdout
    det_files = list((out / "test").glob("*/det/det.txt"))
    assert det_files and (out / "summary.json").is_file()
    for p in det_files:
        read_detections(p)  # valid MOTChallenge detections
        assert (p.parent.parent / "seqinfo.ini").is_file()


def test_bad_detector_inputs_end_in_one_line(tiny_data, tmp_path):
    bad = _train(["--data", str(tiny_data), "--set", "matcher=greedy"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "matcher must be one of" in bad.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage")
    ev = _evaluate(["--detector", str(corrupt), "--data", str(tiny_data)])
    assert ev.returncode == 2 and ev.stderr.strip().count("\n") == 0 and "corrupt.pt" in ev.stderr
