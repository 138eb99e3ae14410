"""The fast MOTChallenge table parser agrees with the per-line parser; errors stay precise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepmot.datasets import table
from deepmot.datasets.mot import _GT_FIELDS, read_detections, read_gt, read_results
from deepmot.datasets.table import parse_table_fast, parse_table_lines
from deepmot.errors import DataFormatError

FIELDS = tuple(f"c{j}" for j in range(12))
SEQS = ("MOT17-09-DPM", "MOT17-09-FRCNN", "MOT17-09-SDP")


def assert_same(a, b) -> None:
    """Two ``(values, ncols, lines)`` triples are identical: dtypes, shapes, bits (NaN padding too)."""
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- random valid files
_number = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(-1e5, 1e5, allow_nan=False).map(repr),
    st.floats(-1e5, 1e5, allow_nan=False, width=32).map(lambda v: f"{v:.6f}"),
    st.floats(1e-8, 1e8).map(lambda v: f"{v:.4e}"),
    st.sampled_from(["+1", "-0", "0.", ".5", "-.25", "1E3", "2e-2", "007", "1.0e+05"]),
)


@st.composite
def valid_table(draw):
    """Text of a table the readers accept with 7..10 columns, plus its expected row count."""
    sep = draw(st.sampled_from([",", ", ", " ,", "\t", " ", "  \t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    n_rows = draw(st.integers(0, 12))
    lines = []
    for _ in range(n_rows):
        if draw(st.integers(0, 4)) == 0:  # blank or whitespace-only line
            lines.append(draw(st.sampled_from(["", " ", "\t", "  "])))
        ncol = draw(st.integers(7, 10))
        pad = draw(st.sampled_from(["", " ", "\t"]))
        lines.append(pad + sep.join(draw(_number) for _ in range(ncol)) + draw(st.sampled_from(["", " ", "\t"])))
    text = newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))
    if draw(st.booleans()):
        text = text.replace(newline, "\n")
    return text


@settings(max_examples=150, deadline=None)
@given(valid_table())
def test_fast_path_equals_line_parser_on_valid_tables(text: str) -> None:
    ref = parse_table_lines(text, "f.txt", 7, 10, FIELDS)
    fast = parse_table_fast(text, 7, 10)
    assert fast is not None, "the fast path should take every well-formed plain table"
    assert_same(fast, ref)
    assert ref[0].shape == (ref[1].shape[0], 10) and ref[0].dtype == np.float64


@pytest.mark.parametrize("ncol", [6, 7, 9, 10, 11])
def test_column_counts(ncol: int) -> None:
    """7-10 columns accepted (both paths, NaN padded); 6 and 11 refused by both, naming the line."""
    text = "\n".join(",".join(str(j + k) for j in range(ncol)) for k in range(1, 4)) + "\n"
    text = "1,2,3,4,5,6,7,8,9,10\n" + text
    if 7 <= ncol <= 10:
        ref = parse_table_lines(text, "f.txt", 7, 10, FIELDS)
        assert_same(parse_table_fast(text, 7, 10), ref)
        assert ref[1].tolist() == [10, ncol, ncol, ncol] and np.isnan(ref[0][1:, ncol:]).all()
    else:
        assert parse_table_fast(text, 7, 10) is None
        with pytest.raises(DataFormatError) as err:
            parse_table_lines(text, "f.txt", 7, 10, FIELDS)
        assert (err.value.line, err.value.field) == (2, "columns")


# --------------------------------------------------------------------------- arbitrary text
_chars = st.sampled_from(list("0123456789,.-+eE \t\r\n") + ["\n\n", ",,", "nan", "inf", "1e999", "_", "x", "٣", "\x0b"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_chars, max_size=80).map("".join), st.sampled_from([(7, 10), (9, 9), (1, 3)]))
def test_fast_path_never_disagrees(text: str, cols) -> None:
    """On any text: when the line parser raises, the fast path declines; when the fast path
    answers, the line parser gives the same arrays."""
    lo, hi = cols
    try:
        ref = parse_table_lines(text, "f.txt", lo, hi, FIELDS)
    except DataFormatError:
        assert parse_table_fast(text, lo, hi) is None
        return
    fast = parse_table_fast(text, lo, hi)
    if fast is not None:
        assert_same(fast, ref)


# --------------------------------------------------------------------------- readers
def _read_both(monkeypatch, reader, path, *args):
    fast = reader(path, *args)
    with monkeypatch.context() as m:
        m.setattr(table, "parse_table_fast", lambda *a: None)  # force the per-line parser
        slow = reader(path, *args)
    return fast, slow


def test_fixture_files_take_the_fast_path_with_identical_rows(fixtures_dir: Path, monkeypatch) -> None:
    for name in SEQS:
        gt_path = fixtures_dir / "mot17" / "train" / name / "gt" / "gt.txt"
        res_path = fixtures_dir / "mot17" / "results" / "Lif_T" / f"{name}.txt"
        for reader, path, cols in ((read_gt, gt_path, (9, 9)), (read_results, res_path, (7, 10))):
            assert parse_table_fast(path.read_text(), *cols) is not None
            fast, slow = _read_both(monkeypatch, reader, path, 525)
            for key in ("frame", "id", "xywh", "conf", "cls", "vis", "line"):
                a, b = getattr(fast, key), getattr(slow, key)
                assert a.dtype == b.dtype, key
                np.testing.assert_array_equal(a, b, err_msg=key)


def _big_valid(n: int) -> list[str]:
    return [f"{k // 5 + 1},{k % 5 + 1},{10 + k}.5,20,30,40,0.9,-1,-1,-1" for k in range(n)]


@pytest.mark.parametrize(
    "bad, field",
    [
        ("7,1,1.2.3,20,30,40,0.9,-1,-1,-1", "x"),
        ("7,1,10,20,1e999,40,0.9,-1,-1,-1", "w"),
        ("7,1,10,20,30,40,nan,-1,-1,-1", "conf"),
        ("7,1,10,20,30,40", "columns"),
        ("7 1 10 20 30 40 0.9 -1 -1 -1", "id"),  # a whitespace row is fine, its id repeats line 132's
        ("7,1,10,20,30,,0.9,-1,-1,-1", "h"),
        ("7,1,10,20,30,40,0.9\r2,-1,-1", "conf"),
        ("7,1,10,20,30,40,0.9,-1,-1,-1,", "columns"),
        ("7,1,10,20,-30,40,0.9,-1,-1,-1", "w"),
        ("7.5,1,10,20,30,40,0.9,-1,-1,-1", "frame"),
    ],
)
def test_errors_deep_in_a_large_file_name_line_and_field(tmp_path: Path, bad: str, field: str) -> None:
    rows = _big_valid(300)
    rows[199] = bad  # line 201 once the blank line below is counted
    p = tmp_path / "res.txt"
    p.write_text("\n".join(rows[:100] + [""] + rows[100:]) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_results(p)
    assert (err.value.path, err.value.line, err.value.field) == (str(p), 201, field)
    assert f"{p}:201" in str(err.value)


def test_readers_agree_on_random_valid_files(tmp_path: Path, monkeypatch) -> None:
    """Whole readers (integer checks, class column, padding) on CRLF/whitespace/mixed-width files."""
    rng = np.random.default_rng(11)  # held-out seed: not used while writing the parser
    for trial in range(20):
        k = int(rng.integers(1, 60))
        frame = rng.integers(1, 20, k)
        ident = np.arange(k) + 1
        xywh = np.round(rng.uniform(0, 500, (k, 4)), int(rng.integers(0, 6)))
        ncol = rng.integers(7, 11, k)
        sep = [",", ", ", " ", "\t"][trial % 4]
        rows = []
        for j in range(k):
            box = [repr(float(v)) for v in xywh[j]]
            vals = [str(frame[j]), str(ident[j]), *box, repr(float(rng.random())), "-1", "-1", "-1"]
            rows.append(sep.join(vals[: ncol[j]]))
        p = tmp_path / f"r{trial}.txt"
        p.write_bytes(("\r\n" if trial % 3 == 0 else "\n").join(rows).encode() + b"\n\n")
        for reader in (read_results, read_detections):
            fast, slow = _read_both(monkeypatch, reader, p)
            for key in ("frame", "id", "xywh", "conf", "cls", "vis", "line"):
                np.testing.assert_array_equal(getattr(fast, key), getattr(slow, key), err_msg=key)
            np.testing.assert_array_equal(fast.xywh, xywh)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_table())
def test_gt_reader_errors_unchanged(tmp_path: Path, text: str) -> None:
    """The same text read as gt.txt (9 columns only): the fast path must not hide or change an error."""
    p = tmp_path / "gt.txt"
    p.write_text(text, encoding="utf-8", newline="")
    try:
        ref = parse_table_lines(text, p, 9, 9, _GT_FIELDS)
    except DataFormatError as e:
        with pytest.raises(DataFormatError) as err:
            read_gt(p)
        assert (err.value.line, err.value.field, err.value.message) == (e.line, e.field, e.message)
        return
    assert_same(table.read_table(p, 9, 9, _GT_FIELDS), ref)


# --------------------------------------------------------------------------- block-wise reading
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_chars, max_size=120).map("".join), st.integers(1, 40), st.sampled_from([(7, 10), (1, 3)]))
def test_blockwise_read_equals_whole_text_parse(tmp_path: Path, monkeypatch, text: str, block: int,
                                                cols) -> None:
    """read_table parses the file in blocks of whole lines; any block size gives the whole-text
    line parser's arrays, or its error with the same line, field and message."""
    lo, hi = cols
    p = tmp_path / "t.txt"
    p.write_bytes(text.encode())
    with monkeypatch.context() as m:
        m.setattr(table, "CHUNK_BYTES", block)
        try:
            ref = parse_table_lines(text, p, lo, hi, FIELDS)
        except DataFormatError as e:
            with pytest.raises(DataFormatError) as err:
                table.read_table(p, lo, hi, FIELDS)
            assert (err.value.line, err.value.field, err.value.message) == (e.line, e.field, e.message)
            return
        assert_same(table.read_table(p, lo, hi, FIELDS), ref)


def test_blockwise_errors_name_the_file_line(tmp_path: Path, monkeypatch) -> None:
    """A bad field or a non-UTF-8 byte far into a file read in small blocks names its own line."""
    rows = _big_valid(300)
    p = tmp_path / "res.txt"
    monkeypatch.setattr(table, "CHUNK_BYTES", 256)
    p.write_text("\n".join(rows[:250] + ["7,1,10,20,30,x,0.9,-1,-1,-1"] + rows[250:]) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_results(p)
    assert (err.value.line, err.value.field) == (251, "h")
    p.write_bytes(("\n".join(rows[:180]) + "\n").encode() + b"1,2,3\xff\n")
    with pytest.raises(DataFormatError) as err:
        read_results(p)
    assert err.value.line == 181 and "UTF-8" in err.value.message
    p.write_text("\n".join(rows) + "\n")
    r = read_results(p)
    assert len(r) == 300 and r.line.tolist() == list(range(1, 301))
