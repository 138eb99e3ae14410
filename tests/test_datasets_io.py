"""MOTChallenge text I/O: real MOT17-09 fixture, error reporting, property-based round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepmot.boxes import xywh_to_xyxy
from deepmot.datasets.mot import (
    discover_sequences,
    gt_sequences,
    half_frame_range,
    read_detections,
    read_gt,
    read_results,
    read_seqinfo,
    split_variant,
    write_results,
)
from deepmot.errors import DataFormatError, MissingDataError

SEQS = ("MOT17-09-DPM", "MOT17-09-FRCNN", "MOT17-09-SDP")


# --------------------------------------------------------------------------- real fixture
def test_fixture_seqinfo_and_discovery(fixtures_dir: Path) -> None:
    root = fixtures_dir / "mot17"
    seqs = discover_sequences(root, "train")
    assert [s.name for s in seqs] == list(SEQS)
    s = seqs[0]
    assert (s.seq_length, s.frame_rate, s.im_width, s.im_height, s.im_dir, s.im_ext) == (525, 30.0, 1920, 1080, "img1", ".jpg")
    assert s.image_path(7).name == "000007.jpg"
    assert [x.name for x in discover_sequences(root, "train", detections="SDP")] == ["MOT17-09-SDP"]
    assert [x.name for x in discover_sequences(root / "train" / "MOT17-09-DPM")] == ["MOT17-09-DPM"]
    with pytest.raises(DataFormatError, match="detections"):
        discover_sequences(root, "train", detections="YOLO")
    assert split_variant("MOT17-09-FRCNN") == ("MOT17-09", "FRCNN")
    assert split_variant("MOT20-01") == ("MOT20-01", None)


def test_fixture_gt_counts_match_expected(fixtures_dir: Path) -> None:
    """Row counts stated in fixtures/mot17/EXPECTED.md."""
    for name in SEQS:
        seq_dir = fixtures_dir / "mot17" / "train" / name
        info = read_seqinfo(seq_dir)
        gt = read_gt(info.gt_path, info.seq_length)
        assert len(gt) == 10411
        assert int(((gt.cls == 1) & (gt.conf == 1)).sum()) == 5325
        for cls, n in {7: 514, 8: 1575, 9: 1050, 12: 1947}.items():
            assert int(((gt.cls == cls) & (gt.conf == 0)).sum()) == n
        assert np.unique(gt.id[(gt.cls == 1) & (gt.conf == 1)]).size == 26  # GT_IDs in EXPECTED
        assert gt.frame.min() >= 1 and gt.frame.max() <= 525
    # first row as quoted in the spec: 1,1,260,450,102,262,1,1,1
    assert gt.frame[0] == 1 and gt.id[0] == 1 and gt.xywh[0].tolist() == [260, 450, 102, 262]
    assert gt.line[0] == 1 and gt.line[-1] == 10411


def test_fixture_results_counts(fixtures_dir: Path) -> None:
    """TrackEval's Count Dets in EXPECTED.md equals the rows of each Lif_T file."""
    for name, n in zip(SEQS, (4013, 3928, 4038)):
        r = read_results(fixtures_dir / "mot17" / "results" / "Lif_T" / f"{name}.txt", 525)
        assert len(r) == n
        assert np.all(r.cls == -1) and np.all(r.vis == -1)
        if name == "MOT17-09-DPM":  # first line as quoted in EXPECTED.md
            assert r.xywh[0].tolist() == [1290.0999755859375, 456.5299987792969, 73.174072265625, 202.06997680664062]


def test_rows_helpers(fixtures_dir: Path) -> None:
    gt = read_gt(fixtures_dir / "mot17" / "train" / "MOT17-09-DPM" / "gt" / "gt.txt")
    expect = xywh_to_xyxy(torch.from_numpy(gt.xywh)).numpy()
    np.testing.assert_array_equal(gt.xyxy(), expect)
    index = gt.frames_index()
    assert sum(len(v) for v in index.values()) == len(gt)
    for f in (1, 200, 525):
        assert np.all(gt.frame[index[f]] == f)
        assert np.all(np.diff(index[f]) > 0)  # file order
        assert set(index[f].tolist()) == set(np.flatnonzero(gt.frame == f).tolist())
    sub = gt.select(gt.cls == 1)
    assert len(sub) == int((gt.cls == 1).sum()) and np.all(sub.cls == 1)


# --------------------------------------------------------------------------- error reporting
GOOD_GT = "1,1,10,20,30,40,1,1,1.0\n2,1,11,21,30,40,1,1,0.5\n"


@pytest.mark.parametrize(
    "line2, field",
    [
        ("2,1,11,21,30,40,1,1", "columns"),
        ("2,1,11,21,30,40,1,1,1,1", "columns"),
        ("2,1,abc,21,30,40,1,1,1", "x"),
        ("2,1,11,nan,30,40,1,1,1", "y"),
        ("2,1,11,21,inf,40,1,1,1", "w"),
        ("2,1,11,21,-3,40,1,1,1", "w"),
        ("2,1,11,21,30,-1,1,1,1", "h"),
        ("0,1,11,21,30,40,1,1,1", "frame"),
        ("11,1,11,21,30,40,1,1,1", "frame"),
        ("2.5,1,11,21,30,40,1,1,1", "frame"),
        ("2,1.5,11,21,30,40,1,1,1", "id"),
        ("1,1,11,21,30,40,1,1,1", "id"),  # duplicate id in frame 1
        ("2,1,11,21,30,40,1,x,1", "class"),
    ],
)
def test_gt_errors_name_line_and_field(tmp_path: Path, line2: str, field: str) -> None:
    p = tmp_path / "gt.txt"
    p.write_text("1,1,10,20,30,40,1,1,1.0\n\n" + line2 + "\n")
    with pytest.raises(DataFormatError) as err:
        read_gt(p, seq_length=10)
    assert err.value.line == 3 and err.value.field == field and err.value.path == str(p)
    assert str(p) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("reader", [read_detections, read_results])
def test_scored_errors(tmp_path: Path, reader) -> None:
    p = tmp_path / "x.txt"
    p.write_text("1,-1,1,2,3,4,0.9,-1,-1,-1\n1,-1,1,2,3,4,0.9,-1,-1,-1,5\n")
    with pytest.raises(DataFormatError) as err:
        reader(p)
    assert (err.value.line, err.value.field) == (2, "columns")
    p.write_text("1,-1,1,2,3,4,0.9,-1,-1,-1\n6,-1,1,2,3,4,0.9,-1,-1,-1\n")
    with pytest.raises(DataFormatError) as err:
        reader(p, seq_length=5)
    assert (err.value.line, err.value.field) == (2, "frame")
    p.write_text("1,-1,1,2,3,4,NaN,-1,-1,-1\n")
    with pytest.raises(DataFormatError) as err:
        reader(p)
    assert (err.value.line, err.value.field) == (1, "score" if reader is read_detections else "conf")


def test_duplicates_allowed_in_detections_not_results(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("1,7,1,2,3,4,0.9,-1,-1,-1\n1,7,5,6,3,4,0.8,-1,-1,-1\n")
    assert len(read_detections(p)) == 2
    with pytest.raises(DataFormatError, match="twice"):
        read_results(p)


def test_whitespace_blank_lines_and_short_results(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    p.write_text("\n1 3 10.5 20 30 40 0.7\r\n\n  2\t3 11 21 30 40 0.6 -1 -1 -1\n")
    r = read_results(p)
    assert r.frame.tolist() == [1, 2] and r.id.tolist() == [3, 3] and r.line.tolist() == [2, 4]
    assert r.xywh[0].tolist() == [10.5, 20, 30, 40] and r.conf.tolist() == [0.7, 0.6]
    empty = tmp_path / "e.txt"
    empty.write_text("\n \n")
    assert len(read_gt(empty)) == 0 and read_gt(empty).xywh.shape == (0, 4)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError):
        read_seqinfo(tmp_path)
    with pytest.raises(MissingDataError):
        read_gt(tmp_path / "nope.txt")
    with pytest.raises(MissingDataError):
        discover_sequences(tmp_path, "train")


@pytest.mark.parametrize(
    "text, field",
    [
        ("[Sequence]\nname=a\nseqLength=10\nimWidth=64\n", "imHeight"),
        ("[Sequence]\nseqLength=ten\nimWidth=64\nimHeight=48\n", "seqLength"),
        ("[Sequence]\nseqLength=0\nimWidth=64\nimHeight=48\n", "seqLength"),
        ("[Other]\nseqLength=10\n", "Sequence"),
        ("[Sequence]\nseqLength=10\nimWidth=64\nimHeight=48\nframeRate=fast\n", "frameRate"),
    ],
)
def test_seqinfo_errors(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "seqinfo.ini").write_text(text)
    with pytest.raises(DataFormatError) as err:
        read_seqinfo(tmp_path)
    assert err.value.field == field


def test_half_split_partitions_frames() -> None:
    for n in (1, 2, 3, 10, 525, 600):
        a, b = half_frame_range(n, "train-half"), half_frame_range(n, "val-half")
        assert a[0] == 1 and b[1] == n and a[0] <= a[1] and b[0] <= b[1]
        if n >= 3:
            assert b[0] == a[1] + 1  # disjoint, together all frames
    assert half_frame_range(600, "train-half") == (1, 301)  # ByteTrack: frames 0..300 0-based
    with pytest.raises(ValueError):
        half_frame_range(10, "first")


# --------------------------------------------------------------------------- property-based
_readers = st.sampled_from([read_gt, read_detections, read_results])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), reader=_readers, seq_length=st.one_of(st.none(), st.integers(1, 50)))
def test_arbitrary_bytes_raise_only_data_format_error(tmp_path: Path, data: bytes, reader, seq_length) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(data)
    try:
        rows = reader(p, seq_length)
    except DataFormatError:
        return
    assert rows.xywh.shape == (len(rows), 4)


_num = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
_field = st.one_of(
    st.integers(-5, 2000).map(str),
    _num.map(repr),
    st.sampled_from(["nan", "inf", "-inf", "", "x", "1e999", "0x10", "1_0", "  ", "\x00", "٣"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(_field, min_size=5, max_size=11), max_size=6),
    sep=st.sampled_from([",", " ", "\t", ", "]),
    reader=_readers,
)
def test_near_valid_text_raises_only_data_format_error(tmp_path: Path, rows, sep, reader) -> None:
    p = tmp_path / "f.txt"
    p.write_text("\n".join(sep.join(r) for r in rows), encoding="utf-8")
    try:
        reader(p, 100)
    except DataFormatError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(1, 30),
            st.integers(-1, 40),
            st.floats(-1e3, 3e3, allow_nan=False, width=32),
            st.floats(-1e3, 3e3, allow_nan=False, width=32),
            st.floats(0, 500, allow_nan=False),
            st.floats(0, 500, allow_nan=False),
            st.floats(-10, 10, allow_nan=False),
        ),
        max_size=25,
        unique_by=lambda r: (r[0], r[1]),
    )
)
def test_write_read_results_round_trip(tmp_path: Path, rows) -> None:
    p = tmp_path / "sub" / "res.txt"
    a = np.array(rows, dtype=np.float64).reshape(-1, 7)
    write_results(p, a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], a[:, 6])
    r = read_results(p, seq_length=30)
    order = np.lexsort((a[:, 1], a[:, 0]))
    np.testing.assert_array_equal(r.frame, a[order, 0])
    np.testing.assert_array_equal(r.id, a[order, 1])
    np.testing.assert_array_equal(r.xywh, a[order, 2:6])  # exact: shortest round-trip repr
    np.testing.assert_array_equal(r.conf, a[order, 6])
    assert np.all(r.cls == -1)
    assert [q.name for q in p.parent.iterdir()] == ["res.txt"]  # no temp file left behind
    if len(rows):
        assert p.read_text().splitlines()[0].endswith(",-1,-1,-1")


def test_write_results_rejects_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    with pytest.raises(ValueError, match="1-based"):
        write_results(p, [0], [1], [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="twice"):
        write_results(p, [1, 1], [2, 2], [[1, 2, 3, 4], [1, 2, 3, 4]])
    with pytest.raises(ValueError, match="negative"):
        write_results(p, [1], [2], [[1, 2, -3, 4]])
    with pytest.raises(ValueError, match="rows"):
        write_results(p, [1, 2], [2], [[1, 2, 3, 4]])
    assert not p.exists()
    write_results(p, torch.tensor([2, 1]), torch.tensor([5, 5]), torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]))
    assert p.read_text() == "1,5,5,6,7,8,1,-1,-1,-1\n2,5,1,2,3,4,1,-1,-1,-1\n"


def test_discovery_mot20_style_and_variants(tmp_path: Path) -> None:
    for name in ("MOT20-01", "MOT17-02-DPM", "MOT17-02-SDP"):
        d = tmp_path / "train" / name
        d.mkdir(parents=True)
        (d / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength=5\nimWidth=64\nimHeight=48\n")
    (tmp_path / "train" / "notes").mkdir()  # folders without seqinfo.ini are not sequences
    assert [s.name for s in discover_sequences(tmp_path)] == ["MOT17-02-DPM", "MOT17-02-SDP", "MOT20-01"]
    assert [s.name for s in discover_sequences(tmp_path, detections=["SDP"])] == ["MOT17-02-SDP", "MOT20-01"]
    assert [s.name for s in discover_sequences(tmp_path / "train")] == ["MOT17-02-DPM", "MOT17-02-SDP", "MOT20-01"]


def test_gt_sequences_one_variant_per_base_with_gt(tmp_path: Path) -> None:
    for name, gt in (("MOT17-02-DPM", True), ("MOT17-02-SDP", True), ("MOT17-04-DPM", False),
                     ("MOT17-05-FRCNN", True), ("MOT20-01", True)):
        d = tmp_path / "train" / name
        (d / "gt").mkdir(parents=True)
        (d / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength=5\nimWidth=64\nimHeight=48\n")
        if gt:
            (d / "gt" / "gt.txt").write_text("1,1,1,1,5,5,1,1,1\n")
    got = gt_sequences(tmp_path)
    assert [(b, i.name) for b, i in got] == [("MOT17-02", "MOT17-02-DPM"), ("MOT17-05", "MOT17-05-FRCNN"),
                                             ("MOT20-01", "MOT20-01")]   # 04 has no GT
    assert [b for b, _ in gt_sequences(tmp_path, exclude=["MOT17-02"])] == ["MOT17-05", "MOT20-01"]
    assert [b for b, _ in gt_sequences(tmp_path, only=["MOT20-01", "MOT17-02"])] == ["MOT17-02", "MOT20-01"]
