"""Evaluation: oracle numbers on real MOT17 data (TrackEval and motmetrics), motmetrics' own TUD
regression values, IoU bit-exactness, malformed files, and the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest

from deepmot.datasets.mot import discover_sequences, read_results
from deepmot.evaluation import (
    MODES,
    SequenceTask,
    accumulate,
    evaluate_sequence,
    evaluate_tasks,
    iou_xywh,
    preprocess,
    summarize,
    tasks_from_folders,
)

VARIANTS = ("MOT17-09-DPM", "MOT17-09-FRCNN", "MOT17-09-SDP")
# EXPECTED.json key -> our key
TE_KEYS = {"CLR_TP": "TP", "CLR_FN": "FN", "CLR_FP": "FP"}
MM_KEYS = {"idf1": "IDF1", "idp": "IDP", "idr": "IDR", "recall": "Rcll", "precision": "Prcn",
           "num_unique_objects": "GT_IDs", "mostly_tracked": "MT", "partially_tracked": "PT", "mostly_lost": "ML",
           "num_false_positives": "FP", "num_misses": "FN", "num_switches": "IDSW", "num_fragmentations": "Frag",
           "mota": "MOTA", "motp": "MOTP_dist", "num_transfer": "IDt", "num_ascend": "IDa", "num_migrate": "IDm"}


def _fixture_tasks(mot17: Path) -> list[SequenceTask]:
    seqs = discover_sequences(mot17, "train")
    tasks, errors = tasks_from_folders(mot17 / "results" / "Lif_T", seqs)
    assert not errors and [t.name for t in tasks] == list(VARIANTS)
    return tasks


@pytest.fixture(scope="module")
def mot17(fixtures_dir) -> Path:
    return fixtures_dir / "mot17"


@pytest.fixture(scope="module")
def expected(mot17) -> dict:
    return json.loads((mot17 / "EXPECTED.json").read_text())


def _check(ours: dict, theirs: dict, keymap: dict, where: str) -> None:
    for k, v in theirs.items():
        got = ours[keymap.get(k, k)]
        assert got == pytest.approx(v, rel=0, abs=1e-9), f"{where} {k}: ours {got!r} vs reference {v!r}"


def test_mot17_fixture_official_equals_trackeval(mot17, expected):
    ev = evaluate_tasks(_fixture_tasks(mot17), "mot17", MODES["official"], workers=1)
    assert not ev.errors
    ref = expected["trackeval"]
    for name in VARIANTS:
        _check(ev.sequences[name], ref[name], TE_KEYS, name)
    _check(ev.combined, ref["COMBINED"], TE_KEYS, "COMBINED")
    # TrackEval's Count metric (EXPECTED.md): Dets per file, GT_Dets 5325, GT_IDs 26; nothing removed
    assert [ev.sequences[n]["Dets"] for n in VARIANTS] == [4013, 3928, 4038]
    assert [ev.sequences[n]["IDs"] for n in VARIANTS] == [38, 32, 33]
    assert ev.combined["GT_Dets"] == 15975 and ev.combined["GT_IDs"] == 78 and ev.combined["Removed"] == 0


def test_mot17_fixture_motmetrics_mode_equals_motmetrics(mot17, expected):
    ev = evaluate_tasks(_fixture_tasks(mot17), "mot17", MODES["motmetrics"], workers=2)
    assert not ev.errors
    ref = expected["motmetrics"]
    for name in VARIANTS:
        _check(ev.sequences[name], ref[name], MM_KEYS, name)
    _check(ev.combined, ref["OVERALL"], MM_KEYS, "OVERALL")


def test_iou_bit_identical_to_trackeval():
    from trackeval.datasets._base_dataset import _BaseDataset

    rng = np.random.default_rng(5)
    a = np.round(rng.uniform(0, 100, (40, 4)), rng.integers(0, 3))
    b = np.concatenate([a[:10], a[:5] + 0.5, rng.uniform(0, 100, (20, 4))])
    b[3, 2] = 0.0  # degenerate box
    ref = _BaseDataset._calculate_box_ious(a, b, box_format="xywh")
    assert np.array_equal(iou_xywh(a, b), ref)
    assert iou_xywh(np.zeros((0, 4)), b).shape == (0, len(b))


# --------------------------------------------------------------------------- motmetrics' own data
TUD_REF = {  # motmetrics/tests/test_metrics.py::test_motchallenge_files (asserted with atol 1e-3)
    "TUD-Campus": [0.557659, 0.729730, 0.451253, 0.582173, 0.941441, 8, 1, 6, 1, 13, 150, 7, 7, 0.526462, 0.277201],
    "TUD-Stadtmitte": [0.644619, 0.819760, 0.531142, 0.608997, 0.939920, 10, 5, 4, 1, 45, 452, 7, 6, 0.564014,
                       0.345904],
    "OVERALL": [0.624296, 0.799176, 0.512211, 0.602640, 0.940268, 18, 6, 10, 2, 58, 602, 14, 13, 0.555116, 0.330177],
}


def test_tud_reproduces_motmetrics_regression_values():
    data = Path(mm.__file__).parent / "data"
    results = []
    for name in ("TUD-Campus", "TUD-Stadtmitte"):
        # MOT15-style GT (10 columns, class -1): read as rows with a flag column; no class filter
        gt = read_results(data / name / "gt.txt")
        res = read_results(data / name / "test.txt")
        results.append(evaluate_sequence(preprocess(name, gt, res, None, "none"), MODES["motmetrics"]))
    names = list(mm.metrics.motchallenge_metrics[:15])
    rows, overall = summarize(results, MODES["motmetrics"])
    rows["OVERALL"] = overall
    for seq, ref in TUD_REF.items():
        for k, v in zip(names, ref):
            got = rows[seq][MM_KEYS[k]]
            assert got == pytest.approx(v, abs=1e-3 if isinstance(v, float) else 0), f"{seq} {k}: {got} vs {v}"
    # the GitHub README quotes HOTA on the two TUD sequences: OVERALL DetA 39.8, AssA 41.2, HOTA 40.0 (%)
    assert rows["OVERALL"]["HOTA"] == pytest.approx(0.400, abs=6e-4)
    assert rows["OVERALL"]["DetA"] == pytest.approx(0.398, abs=6e-4)
    assert rows["OVERALL"]["AssA"] == pytest.approx(0.412, abs=6e-4)


# --------------------------------------------------------------------------- bad input
def _copy_gt(mot17: Path, dst: Path) -> Path:
    root = dst / "data"
    for name in VARIANTS:
        shutil.copytree(mot17 / "train" / name, root / "train" / name)
    return root


def test_malformed_result_files_reported_per_file_others_evaluated(mot17, tmp_path):
    root = _copy_gt(mot17, tmp_path)
    res_dir = tmp_path / "res"
    res_dir.mkdir()
    good = (mot17 / "results" / "Lif_T" / "MOT17-09-DPM.txt").read_text().splitlines()
    (res_dir / "MOT17-09-DPM.txt").write_text("\n".join(good) + "\n")
    bad_cols = list(good)
    bad_cols[6] = "1,2,3"  # wrong column count on line 7
    (res_dir / "MOT17-09-FRCNN.txt").write_text("\n".join(bad_cols) + "\n")
    bad_frame = list(good)
    bad_frame[9] = "600," + bad_frame[9].split(",", 1)[1]  # frame 600 > seqLength 525 on line 10
    (res_dir / "MOT17-09-SDP.txt").write_text("\n".join(bad_frame) + "\n")
    # duplicate id in a frame (line 2 repeats the id of line 1) and tracker class 2
    dup = list(good[:5])
    f1 = dup[0].split(",")
    f2 = dup[1].split(",")
    f2[0], f2[1] = f1[0], f1[1]
    dup[1] = ",".join(f2)
    (res_dir / "dup.txt").write_text("\n".join(dup) + "\n")
    cls = list(good[:5])
    c = cls[3].split(",")
    c[7] = "2"
    cls[3] = ",".join(c)
    (res_dir / "cls.txt").write_text("\n".join(cls) + "\n")
    seqs = discover_sequences(root, "train")
    tasks, errors = tasks_from_folders(res_dir, seqs)
    assert set(errors) == {"dup", "cls"}  # no GT for these names
    # evaluate dup/cls files against the DPM ground truth
    gt = str(root / "train" / "MOT17-09-DPM" / "gt" / "gt.txt")
    tasks += [SequenceTask("dup", gt, str(res_dir / "dup.txt"), 525), SequenceTask("cls", gt, str(res_dir / "cls.txt"), 525)]
    ev = evaluate_tasks(tasks, "mot17", MODES["official"], workers=1, hota=False)
    assert list(ev.sequences) == ["MOT17-09-DPM"]
    assert ev.sequences["MOT17-09-DPM"]["MOTA"] == pytest.approx(0.7290140845070423, abs=1e-12)
    assert "MOT17-09-FRCNN.txt:7" in ev.errors["MOT17-09-FRCNN"] and "columns" in ev.errors["MOT17-09-FRCNN"]
    assert "MOT17-09-SDP.txt:10" in ev.errors["MOT17-09-SDP"] and "frame" in ev.errors["MOT17-09-SDP"]
    assert "dup.txt:2" in ev.errors["dup"] and "id" in ev.errors["dup"]
    assert "cls.txt:4" in ev.errors["cls"] and "class" in ev.errors["cls"]
    assert ev.combined["TP"] == 3955  # COMBINED over the evaluated sequence only


def test_cli_writes_summaries_and_reports_missing_images(mot17, tmp_path, capsys):
    import evaluate

    out = tmp_path / "out"
    rc = evaluate.main(["--results", str(mot17 / "results" / "Lif_T"), "--data", str(mot17), "--out", str(out),
                        "--no-hota", "--seqs", "MOT17-09-FRCNN"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mode: official" in text and "MOT17-09-FRCNN" in text and "COMBINED" in text
    data = json.loads((out / "summary.json").read_text())
    assert data["sequences"]["MOT17-09-FRCNN"]["IDSW"] == 10
    assert data["conventions"]["mode"] == "official"
    header, row1, row2 = (out / "summary.csv").read_text().splitlines()[:3]
    assert header.startswith("sequence,") and row1.startswith("MOT17-09-FRCNN,") and row2.startswith("COMBINED,")
    # the fixture has annotations but no images: running a tracker on it is a clear error
    weights = mot17.parent / "pysot" / "siamrpn_alex_dwxcorr" / "state_dict.pth"
    assert evaluate.main(["--tracker", "siamrpn", "--model", "siamrpn_alex_dwxcorr", "--checkpoint", str(weights),
                          "--data", str(mot17), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "MOT17-09-DPM/img1" in err and "missing" in err


def _rows(frames, ids, boxes, cls=None, flag=None):
    from deepmot.datasets.mot import MOTRows

    k = len(frames)
    return MOTRows("mem", np.asarray(frames, np.int64), np.asarray(ids, np.int64), np.asarray(boxes, float),
                   np.ones(k) if flag is None else np.asarray(flag, float),
                   np.ones(k, np.int64) if cls is None else np.asarray(cls, np.int64), -np.ones(k), np.arange(1, k + 1))


def test_matching_rules_differ_as_documented():
    """Spec §2.7 case B2: the two matching rules disagree; each equals its own tool."""
    from trackeval.metrics import CLEAR

    box = [0, 0, 10, 10]
    gt = _rows([1, 2, 3], [1, 1, 1], [box, box, box])
    # h1 IoU 1 in frame 1; frame 2 one unrelated box; frame 3 h1 at IoU 0.6 (shifted 2.5 px), h2 at IoU 1
    res = _rows([1, 2, 3, 3], [1, 3, 1, 2], [box, [50, 50, 10, 10], [2.5, 0, 10, 10], box])
    seq = preprocess("B2", gt, res, 3, "none")
    te = CLEAR().eval_sequence(seq.trackeval_dict())
    official = evaluate_sequence(seq, MODES["official"]).counts
    motm = evaluate_sequence(seq, MODES["motmetrics"]).counts
    acc, _ = accumulate(seq, "motmetrics")
    ref_mm = mm.metrics.create().compute(acc, metrics=["num_switches"], return_dataframe=False)
    assert official["IDSW"] == te["IDSW"] == 1
    assert motm["IDSW"] == ref_mm["num_switches"] == 0
