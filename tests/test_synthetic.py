"""Built-in synthetic MOT17: scored by TrackEval, detector flavours, scene properties, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmot.boxes import box_iou
from deepmot.datasets import Sequence, discover_sequences, read_detections, read_gt, write_results
from deepmot.datasets.render import visibility
from deepmot.datasets.synthetic import (
    MARKER,
    SyntheticConfig,
    generate_synthetic,
    main,
    resolve_data_root,
)
from deepmot.matching.linear import gated_linear_assignment

SMALL = SyntheticConfig(seed=3, num_train=2, num_test=1, width=320, height=192, min_frames=50,
                        max_frames=70, min_objects=6, max_objects=10, num_val=0)
TINY = SyntheticConfig(seed=5, num_train=1, num_test=0, width=96, height=64, min_frames=6, max_frames=8,
                       min_objects=2, max_objects=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(out, SMALL)
    return out


def _trackeval_scores(gt_root: Path, seqs: list[str], results: dict[str, Path], work: Path) -> dict:
    """Run the installed TrackEval (official MOT17 protocol) on result files -> per-seq metrics."""
    trackeval = pytest.importorskip("trackeval")
    gt_fol, tr_fol = work / "gt", work / "trackers"
    for s in seqs:
        (gt_fol / s / "gt").mkdir(parents=True)
        shutil.copy(gt_root / s / "gt" / "gt.txt", gt_fol / s / "gt" / "gt.txt")
        shutil.copy(gt_root / s / "seqinfo.ini", gt_fol / s / "seqinfo.ini")
        (tr_fol / "mine" / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy(results[s], tr_fol / "mine" / "data" / f"{s}.txt")
    seqmap = work / "seqmap.txt"
    seqmap.write_text("name\n" + "".join(s + "\n" for s in seqs))
    ds = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(gt_fol), "TRACKERS_FOLDER": str(tr_fol), "OUTPUT_FOLDER": str(work / "out"),
        "TRACKERS_TO_EVAL": ["mine"], "BENCHMARK": "MOT17", "SPLIT_TO_EVAL": "train",
        "SKIP_SPLIT_FOL": True, "SEQMAP_FILE": str(seqmap), "PRINT_CONFIG": False, "DO_PREPROC": True,
    })
    ev = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                              "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                              "PLOT_CURVES": False, "LOG_ON_ERROR": None, "BREAK_ON_ERROR": True})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
    res, _ = ev.evaluate([ds], metrics)
    return {s: v["pedestrian"] for s, v in res["MotChallenge2DBox"]["mine"].items()}


def test_gt_as_tracker_output_is_perfect_under_trackeval(small_set: Path, tmp_path: Path) -> None:
    train = small_set / "train"
    seqs = ["MOT17-02-FRCNN", "MOT17-04-SDP"]
    results = {}
    for s in seqs:
        gt = read_gt(train / s / "gt" / "gt.txt")
        keep = (gt.cls == 1) & (gt.conf == 1)
        assert (~keep).any()  # distractor rows exist, so preprocessing has work to do
        results[s] = tmp_path / f"{s}.txt"
        write_results(results[s], gt.frame[keep], gt.id[keep], gt.xywh[keep])
    scores = _trackeval_scores(train, seqs, results, tmp_path / "te")
    for s in seqs + ["COMBINED_SEQ"]:
        m = scores[s]
        assert m["CLEAR"]["MOTA"] == pytest.approx(1.0)
        assert m["Identity"]["IDF1"] == pytest.approx(1.0)
        assert float(np.mean(m["HOTA"]["HOTA"])) == pytest.approx(1.0)
        assert m["CLEAR"]["CLR_TP"] > 0


def _recall_precision(root: Path, variant: str) -> tuple[float, float]:
    """Detection recall/precision vs class-1 flag-1 GT: IoU >= 0.5 Hungarian matching per frame."""
    tp = n_gt = n_det = 0
    for info in discover_sequences(root, "train", detections=variant):
        gt, det = read_gt(info.gt_path), read_detections(info.det_path)
        gt = gt.select((gt.cls == 1) & (gt.conf == 1))
        gi, di = gt.frames_index(), det.frames_index()
        gxy, dxy = torch.from_numpy(gt.xyxy()), torch.from_numpy(det.xyxy())
        for f in range(1, info.seq_length + 1):
            g, d = gi.get(f, np.zeros(0, int)), di.get(f, np.zeros(0, int))
            n_gt, n_det = n_gt + len(g), n_det + len(d)
            if len(g) and len(d):
                iou = box_iou(dxy[d], gxy[g]).numpy()
                rows, _ = gated_linear_assignment(1 - iou, iou < 0.5)
                tp += len(rows)
    return tp / n_gt, tp / n_det


@pytest.mark.parametrize("seed", [3, 23])  # 3: the module set; 23: held out, never tuned on
def test_detector_flavours_differ(small_set: Path, tmp_path: Path, seed: int) -> None:
    root = small_set
    if seed != SMALL.seed:
        root = tmp_path / "held_out"
        generate_synthetic(root, SyntheticConfig(**{**SMALL.__dict__, "seed": seed, "num_test": 0}))
    rp = {v: _recall_precision(root, v) for v in ("DPM", "FRCNN", "SDP")}
    (r_dpm, p_dpm), (r_fr, p_fr), (r_sdp, p_sdp) = rp["DPM"], rp["FRCNN"], rp["SDP"]
    assert r_dpm + 0.05 < r_fr and r_fr + 0.03 < r_sdp, rp
    assert p_dpm + 0.1 < p_fr and p_fr + 0.03 < p_sdp, rp
    assert r_dpm > 0.3 and p_sdp > 0.65, rp


def test_scenes_are_nontrivial(small_set: Path) -> None:
    for info in discover_sequences(small_set, "train", detections="SDP"):
        gt = read_gt(info.gt_path, info.seq_length)
        ped = (gt.cls == 1) & (gt.conf == 1)
        assert set(np.unique(gt.cls[~ped]).tolist()) == {7, 12} and np.all(gt.conf[~ped] == 0)
        assert np.all((gt.vis >= 0) & (gt.vis <= 1))
        p = gt.select(ped)
        ids = np.unique(p.id)
        first = np.array([p.frame[p.id == i].min() for i in ids])
        last = np.array([p.frame[p.id == i].max() for i in ids])
        assert (first > 1).any() and (last < info.seq_length).any()  # identities enter and leave
        assert (p.vis < 0.5).mean() > 0.02  # real occlusions
        h = p.xywh[:, 3]
        assert h.std() / h.mean() > 0.15  # sizes vary
        overlapping = 0
        for rows in p.frames_index().values():
            iou = box_iou(torch.from_numpy(p.xyxy()[rows]), torch.from_numpy(p.xyxy()[rows]))
            overlapping += int((torch.triu(iou, 1) > 0.3).sum())
        assert overlapping > 5  # people cross each other
        speeds = []
        for i in ids:
            cx = p.xywh[p.id == i, 0] + p.xywh[p.id == i, 2] / 2
            if cx.size > 5:
                speeds.append(np.abs(np.diff(cx)).mean())
        assert np.std(speeds) > 0.2  # speeds vary across identities
    seq = Sequence(discover_sequences(small_set, "test", detections="DPM")[0])
    a, b = seq[0].image, seq[len(seq) - 1].image
    assert a.shape == (SMALL.height, SMALL.width, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 2


def test_deterministic_and_cli(tmp_path: Path, capsys) -> None:
    generate_synthetic(tmp_path / "a", TINY)
    args = ["--out", str(tmp_path / "b")]
    for k, v in TINY.__dict__.items():
        flag = "--" + k.replace("_", "-")
        args += ([flag] if v else ["--no-" + k.replace("_", "-")]) if isinstance(v, bool) else [flag, str(v)]
    assert main(args) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    generate_synthetic(tmp_path / "c", SyntheticConfig(**{**TINY.__dict__, "seed": 6}))
    gt = "train/MOT17-02-DPM/gt/gt.txt"
    assert (tmp_path / "a" / gt).read_bytes() != (tmp_path / "c" / gt).read_bytes()
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    text = capsys.readouterr().out
    for k in TINY.__dict__:
        assert "--" + k.replace("_", "-") in text
    with pytest.raises(ValueError):
        SyntheticConfig(min_frames=10, max_frames=5)


def test_resolve_data_root(tmp_path: Path) -> None:
    lines: list[str] = []
    data = tmp_path / "data"
    root = resolve_data_root(None, log=lines.append, data_dir=data, config=TINY)
    assert root == data / "synthetic" and (root / MARKER).is_file()
    assert any("generating" in s for s in lines)
    assert [s.name for s in discover_sequences(root, "train")] == ["MOT17-02-DPM", "MOT17-02-FRCNN", "MOT17-02-SDP"]
    stamp = (root / MARKER).stat().st_mtime_ns
    lines.clear()
    assert resolve_data_root(None, log=lines.append, data_dir=data, config=TINY) == root
    assert (root / MARKER).stat().st_mtime_ns == stamp and not any("generating" in s for s in lines)
    (data / "MOT17").mkdir()
    assert resolve_data_root(None, log=lines.append, data_dir=data) == data / "MOT17"
    assert resolve_data_root(str(root)) == root
    with pytest.raises(FileNotFoundError):
        resolve_data_root(tmp_path / "nope")


def test_resolve_data_root_keeps_a_set_another_process_finished_first(tmp_path: Path, monkeypatch) -> None:
    """Two first runs at once: the one that finishes second must not delete the set under the
    other's feet (it used to, and the other failed reading a sequence)."""
    import deepmot.datasets.synthetic as synthetic

    data = tmp_path / "data"
    real = synthetic.generate_synthetic

    def race(out, config=None, log=None):       # the other process renames its set in first
        real(data / "synthetic", config)
        (data / "synthetic" / "being-read").write_text("x")
        return real(out, config, log=log)

    monkeypatch.setattr(synthetic, "generate_synthetic", race)
    root = resolve_data_root(None, log=lambda s: None, data_dir=data, config=TINY)
    assert root == data / "synthetic" and (root / "being-read").is_file()
    assert sorted(p.name for p in data.iterdir()) == ["synthetic"]   # no temporary folder left


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 15), st.integers(1, 15),
                          st.integers(0, 5), st.booleans()), min_size=1, max_size=6))
def test_visibility_matches_painters_algorithm(objs) -> None:
    """Visible fraction = pixels of a box still showing after painting boxes far to near."""
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _, _ in objs], dtype=np.float64)
    depth = np.array([d + 0.01 * k for k, (_, _, _, _, d, _) in enumerate(objs)])  # no ties
    occ = np.array([o for *_, o in objs])
    canvas = np.full((50, 50), -1)
    for k in np.argsort(depth):
        x1, y1, x2, y2 = boxes[k].astype(int)
        if occ[k]:
            canvas[y1:y2, x1:x2] = k
    got = visibility(boxes, depth, occ)
    for k in range(len(objs)):
        x1, y1, x2, y2 = boxes[k].astype(int)
        region = canvas[y1:y2, x1:x2]
        # pixels hidden = covered by some occluding box nearer than k
        hidden = (region >= 0) & (depth[np.maximum(region, 0)] > depth[k])
        assert got[k] == pytest.approx(1 - hidden.mean())
