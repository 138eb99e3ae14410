"""Inference engine, tracking videos and ``python evaluate.py`` running a tracker, on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepmot.datasets import Sequence, discover_sequences, read_gt, read_results, write_gt, write_results
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.engine.inference import evaluate_results, evaluate_tracker, run_inference
from deepmot.evaluation import MODES, SequenceTask, evaluate_tasks


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=1, num_test=1, min_frames=10, max_frames=10,
                                             width=192, height=128, min_objects=2, max_objects=3,
                                             static_persons=1, reflections=0))
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from trackers.siamrpn import build_siamrpn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), path)
    return path


class OracleTracker:
    """Writes the scored GT (class 1, flag 1) of each frame with its GT ids; ignores detections."""

    def __init__(self, info):
        self.gt = read_gt(info.gt_path)
        self.rows = []
        self.timing = {"sot": 0.0, "assoc": 0.0}

    def step(self, image, det_boxes, det_scores, frame):
        assert image.ndim == 3 and det_boxes.shape[1] == 4 and det_scores.shape[0] == det_boxes.shape[0]
        k = (self.gt.frame == frame) & (self.gt.cls == 1) & (self.gt.conf == 1)
        self.rows.append((self.gt.frame[k], self.gt.id[k], self.gt.xywh[k]))

    def results(self):
        f, i, b = (np.concatenate(x) for x in zip(*self.rows))
        return f, i, b, np.ones(len(f))


def test_oracle_tracker_scores_perfectly_and_respects_frame_range(tiny, tmp_path):
    seqs = discover_sequences(tiny, "train", detections=["SDP"])
    summary = evaluate_tracker(OracleTracker, seqs, tmp_path / "full")
    assert summary["MOTA"] == 1.0 and summary["IDF1"] == 1.0 and summary["IDSW"] == 0 and summary["FN"] == 0
    assert summary["frames"] == 10 and summary["errors"] == {}
    # val-half: frames m+2..10 with m = 5 -> 7..10 only are run and written
    out = run_inference(OracleTracker, seqs, tmp_path / "half", frame_range="val-half", show_progress=False)
    rows = read_results(out.paths[seqs[0].name])
    assert sorted(set(rows.frame.tolist())) == [7, 8, 9, 10] and out.timing[seqs[0].name].frames == 4


def test_frame_range_evaluation_equals_evaluating_cut_files(tiny, tmp_path):
    """evaluate_results on val-half == the file evaluator on GT/results cut and renumbered by hand."""
    info = discover_sequences(tiny, "train", detections=["FRCNN"])[0]
    gt = read_gt(info.gt_path)
    rng = np.random.default_rng(0)
    keep = rng.random(len(gt)) < 0.8  # a tracker that misses some boxes, jitters and swaps an id
    res_xywh = gt.xywh[keep] + rng.normal(0, 2, (keep.sum(), 4))
    res_ids = gt.id[keep].copy()
    res_ids[gt.frame[keep] >= 9] += 100
    write_results(tmp_path / f"{info.name}.txt", gt.frame[keep], res_ids, res_xywh)
    ev = evaluate_results({info.name: tmp_path / f"{info.name}.txt"}, [info], "val-half", hota=False)
    start = 7
    cut = tmp_path / "cut"
    g = gt.frame >= start
    write_gt(cut / "gt.txt", gt.frame[g] - start + 1, gt.id[g], gt.xywh[g], gt.conf[g], gt.cls[g], gt.vis[g])
    r = gt.frame[keep] >= start
    write_results(cut / "res.txt", gt.frame[keep][r] - start + 1, res_ids[r], res_xywh[r])
    ref = evaluate_tasks([SequenceTask(info.name, str(cut / "gt.txt"), str(cut / "res.txt"), 4)], "mot17",
                         MODES["official"], hota=False)
    for key in ("MOTA", "IDF1", "IDSW", "FP", "FN", "TP", "MT", "Frag"):
        assert ev.combined[key] == ref.combined[key], key
    assert ev.combined["IDSW"] > 0


def test_run_inference_with_the_siamrpn_sequence_factory(tiny, tmp_path):
    from trackers.multi_config import MOTConfig
    from trackers.siamrpn import build_siamrpn
    from trackers.siamrpn.mot import siamrpn_mot_factory

    torch.manual_seed(0)
    seqs = discover_sequences(tiny, "test", detections=["SDP"])
    model = build_siamrpn("siamrpn_alex_tiny").eval()
    factory = siamrpn_mot_factory(model, MOTConfig(birth_wait=1, patience=2))
    out = run_inference(factory, seqs, tmp_path, show_progress=False)
    rows = read_results(out.paths[seqs[0].name], seqs[0].seq_length)
    assert len(rows) > 0 and out.timing[seqs[0].name].sot > 0 and out.total().frames == 10
    with pytest.raises(TypeError, match="per-sequence tracker factory"):
        run_inference(model.state_dict(), seqs, tmp_path, show_progress=False)


def test_frame_errors_marks_fp_fn_and_switch():
    from deepmot.datasets.mot import MOTRows
    from deepmot.evaluation.vis import frame_errors

    def rows(frame, ids, boxes, cls=1):
        k = len(frame)
        return MOTRows("mem", np.asarray(frame), np.asarray(ids), np.asarray(boxes, float), np.ones(k),
                       np.full(k, cls), np.ones(k), np.arange(1, k + 1))

    a, b = [10, 10, 20, 40], [100, 10, 20, 40]
    gt = rows([1, 1, 2, 2, 3], [1, 2, 1, 2, 1], [a, b, a, b, a])
    # frame 1: both matched (ids 5, 6); frame 2: GT 1 taken by id 7 (switch), GT 2 missed, an FP box;
    # frame 3: GT 1 back to... id 7 again (no new switch)
    res = rows([1, 1, 2, 2, 3], [5, 6, 7, 8, 7], [a, b, a, [150, 80, 20, 30], a])
    ev = frame_errors(gt, res, 3, "none")
    assert [len(e["fp"]) for e in ev] == [0, 1, 0] and ev[1]["fp"].tolist() == [[150, 80, 20, 30]]
    assert [len(e["fn"]) for e in ev] == [0, 1, 0] and ev[1]["fn"].tolist() == [b]
    assert [len(e["idsw"]) for e in ev] == [0, 1, 0] and ev[1]["idsw"].tolist() == [a]


def test_tracking_video_has_every_frame(tiny, tmp_path):
    from deepmot.evaluation.vis import id_color, write_tracking_video

    info = discover_sequences(tiny, "train", detections=["DPM"])[0]
    gt = read_gt(info.gt_path)
    write_results(tmp_path / "r.txt", gt.frame, gt.id, gt.xywh)
    seq = Sequence(info, detections=None, frame_range="val-half")
    path = write_tracking_video(seq, tmp_path / "r.txt", tmp_path / "v.mp4")
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (info.im_height, info.im_width, 3)
        n += 1
    cap.release()
    assert n == len(seq) == 4
    assert id_color(3) == id_color(3) and id_color(3) != id_color(4)
    assert not list(tmp_path.glob(".*.mp4"))  # no temporary file left behind


def test_evaluate_cli_runs_tracker_end_to_end(tiny, weights, tmp_path, capsys):
    import evaluate

    out = tmp_path / "out"
    rc = evaluate.main(["--data", str(tiny), "--checkpoint", str(weights), "--out", str(out), "--detections", "SDP",
                        "--set", "mot.birth_wait=1", "--device", "cpu", "--vis"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "COMBINED" in text and "FPS" in text
    seq = discover_sequences(tiny, "test", detections=["SDP"])[0]
    rows = read_results(out / f"{seq.name}.txt", seq.seq_length)  # a valid MOTChallenge file
    assert len(rows) > 0 and rows.frame.min() >= 1
    data = json.loads((out / "summary.json").read_text())
    assert "MOTA" in data["combined"] and "HOTA" in data["combined"]
    assert data["tracker_speed"]["TOTAL"]["frames"] == seq.seq_length
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("sequence,")
    assert (out / "vis" / f"{seq.name}.mp4").stat().st_size > 0
    assert "birth_wait: 1" in (out / "config.yaml").read_text()


def test_evaluate_cli_without_weights_names_the_flag(tiny, tmp_path, capsys, monkeypatch):
    import evaluate

    monkeypatch.setitem(evaluate.DEFAULT_CHECKPOINTS, "siamrpn", [tmp_path / "absent.pth"])
    assert evaluate.main(["--data", str(tiny), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "absent.pth" in err
    assert evaluate.main(["--data", str(tiny), "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_config_file_matches_dataclass_defaults():
    from deepmot.config import load_config
    from trackers.multi_config import InferenceFileConfig

    repo = Path(__file__).resolve().parents[1]
    assert load_config(InferenceFileConfig, repo / "configs" / "mot_inference.yaml") == InferenceFileConfig()


def test_pysot_weights_track_through_evaluate(tiny, pysot_ref, tmp_path, capsys):
    """A PySOT reference's weights file (the one PySOT's own network gave the reference outputs
    with) behind the MOT logic, from the CLI, with its config named by ``--model``."""
    import evaluate

    out = tmp_path / "o"
    rc = evaluate.main(["--data", str(tiny), "--model", pysot_ref.name, "--checkpoint", str(pysot_ref.weights),
                        "--out", str(out), "--detections", "SDP", "--no-hota", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "summary.json").read_text())
    assert data["combined"]["TP"] > 0 and pysot_ref.name in (out / "config.yaml").read_text()


def test_evaluate_cli_results_on_half_val(tiny, tmp_path, capsys):
    """``--results`` with ``--split half-val``: the scored GT written as results scores perfectly
    on frames 7..10 only (GT_Dets counts the val half)."""
    import evaluate

    info = discover_sequences(tiny, "train", detections=["SDP"])[0]
    gt = read_gt(info.gt_path)
    k = (gt.cls == 1) & (gt.conf == 1)
    write_results(tmp_path / "res" / f"{info.name}.txt", gt.frame[k], gt.id[k], gt.xywh[k])
    assert evaluate.main(["--results", str(tmp_path / "res"), "--data", str(tiny), "--split", "half-val",
                          "--no-hota", "--out", str(tmp_path / "o"), "--seqs", info.name]) == 0
    comb = json.loads((tmp_path / "o" / "summary.json").read_text())["combined"]
    assert comb["MOTA"] == 1.0 and comb["GT_Dets"] == int((k & (gt.frame >= 7)).sum())


def test_evaluate_cli_tracker_workers_equal_serial(tiny, weights, tmp_path, capsys):
    """``--workers 2`` in tracker mode (3 sequences over 2 spawned processes, 1 thread each) writes
    the same result files and scores as the serial run."""
    import evaluate

    common = ["--data", str(tiny), "--checkpoint", str(weights), "--set", "mot.birth_wait=1", "--device", "cpu",
              "--threads", "1", "--no-hota"]
    assert evaluate.main(common + ["--out", str(tmp_path / "serial")]) == 0, capsys.readouterr().err
    assert evaluate.main(common + ["--out", str(tmp_path / "par"), "--workers", "2"]) == 0, capsys.readouterr().err
    assert "2 worker processes" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "serial").glob("*.txt"))
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "par").glob("*.txt"))
    for n in names:
        serial = (tmp_path / "serial" / n).read_text()
        assert serial and serial == (tmp_path / "par" / n).read_text(), n
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("serial", "par"))
    assert a["combined"] == b["combined"] and a["sequences"] == b["sequences"]
    assert a["combined"]["TP"] > 0
    assert b["tracker_speed"]["TOTAL"]["frames"] == a["tracker_speed"]["TOTAL"]["frames"] == 30
