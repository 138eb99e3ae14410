"""MOTChallenge text formats: ``gt.txt``, ``det.txt`` and tracker result files.

Readers return :class:`MOTRows` (numpy arrays, rows in file order, boxes exactly as in the file:
1-based ``x, y, w, h`` in pixels). Every problem with the input raises
:class:`~deepmot.errors.DataFormatError` naming the file, the 1-based line and the field;
missing files raise :class:`~deepmot.errors.MissingDataError`. Tokenising is
:mod:`deepmot.datasets.table`; ``seqinfo.ini`` and discovery live in
:mod:`deepmot.datasets.layout` (their names are re-exported here).

Formats (MOT16/17/20):

* ``gt.txt``: 9 columns ``frame, id, x, y, w, h, flag, class, visibility``.
* ``det.txt``: 10 columns ``frame, -1, x, y, w, h, score, -1, -1, -1`` (7 to 9 accepted).
* results: 10 columns ``frame, id, x, y, w, h, conf, -1, -1, -1`` (7 to 9 accepted).

Values may be separated by commas or by whitespace; blank lines are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepmot.datasets.layout import (
    MOT17_VARIANTS,
    SeqInfo,
    discover_sequences,
    gt_sequences,
    half_frame_range,
    read_seqinfo,
    split_variant,
    write_seqinfo,
)
from deepmot.datasets.table import read_table
from deepmot.errors import DataFormatError
from deepmot.fileio import atomic_write_text

__all__ = [
    "SeqInfo",
    "MOTRows",
    "read_seqinfo",
    "write_seqinfo",
    "read_gt",
    "read_detections",
    "read_results",
    "write_results",
    "write_gt",
    "write_detections",
    "split_variant",
    "discover_sequences",
    "gt_sequences",
    "half_frame_range",
    "MOT17_VARIANTS",
]


_GT_FIELDS = ("frame", "id", "x", "y", "w", "h", "flag", "class", "visibility")
_DET_FIELDS = ("frame", "id", "x", "y", "w", "h", "score", "x3d", "y3d", "z3d")
_RES_FIELDS = ("frame", "id", "x", "y", "w", "h", "conf", "class", "y3d", "z3d")
# Integer fields must hold integral values within this magnitude.
_INT_LIMIT = 2**53  # integers a float64 holds exactly (TrackEval reads ids as floats too)


# --------------------------------------------------------------------------- rows
@dataclass
class MOTRows:
    """Rows of one MOTChallenge text file, in file order (``K`` rows).

    ``frame`` int64 (1-based), ``id`` int64 (-1 for detections), ``xywh`` float64 ``(K, 4)``
    exactly as in the file (1-based ``x, y``, pixels), ``conf`` float64 (gt: the flag column;
    detections/results: the score column), ``cls`` int64 (-1 when absent), ``vis`` float64
    (-1 when absent), ``line`` int64 1-based line numbers in ``path``.
    """

    path: str
    frame: np.ndarray
    id: np.ndarray
    xywh: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    vis: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def xyxy(self) -> np.ndarray:
        """``(K, 4)`` float64 ``x1, y1, x2, y2`` with ``x2 = x + w`` (same 1-based origin)."""
        out = self.xywh.copy()
        out[:, 2:] += out[:, :2]
        return out

    def select(self, mask) -> MOTRows:
        """Rows picked by a boolean mask or an index array, as a new :class:`MOTRows`."""
        mask = np.asarray(mask)
        return MOTRows(
            path=self.path,
            frame=self.frame[mask],
            id=self.id[mask],
            xywh=self.xywh[mask],
            conf=self.conf[mask],
            cls=self.cls[mask],
            vis=self.vis[mask],
            line=self.line[mask],
        )

    def frames_index(self) -> dict[int, np.ndarray]:
        """``{frame: int64 row indices}`` for every frame present, rows in file order."""
        if len(self) == 0:
            return {}
        order = np.argsort(self.frame, kind="stable")
        frames, starts = np.unique(self.frame[order], return_index=True)
        ends = np.append(starts[1:], order.shape[0])
        return {int(f): order[s:e].astype(np.int64) for f, s, e in zip(frames, starts, ends)}


def _empty_rows(path: str) -> MOTRows:
    return MOTRows(
        path=path,
        frame=np.zeros(0, np.int64),
        id=np.zeros(0, np.int64),
        xywh=np.zeros((0, 4), np.float64),
        conf=np.zeros(0, np.float64),
        cls=np.zeros(0, np.int64),
        vis=np.zeros(0, np.float64),
        line=np.zeros(0, np.int64),
    )


def _fail_first(bad: np.ndarray, message, path, lines: np.ndarray, field: str, values=None):
    """Raise DataFormatError for the first True entry of ``bad`` (no-op if none)."""
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        msg = message if values is None else f"{message}, got {values[k]:g}"
        raise DataFormatError(msg, path, int(lines[k]), field)


def _as_int(values: np.ndarray, path, lines: np.ndarray, field: str) -> np.ndarray:
    bad = (values != np.round(values)) | (np.abs(values) > _INT_LIMIT)
    _fail_first(bad, "expected an integer", path, lines, field, values)
    return values.astype(np.int64)


def _check_common(vals, lines, path, seq_length: int | None):
    frame = _as_int(vals[:, 0], path, lines, "frame")
    ident = _as_int(vals[:, 1], path, lines, "id")
    _fail_first(frame < 1, "frame numbers start at 1", path, lines, "frame", vals[:, 0])
    if seq_length is not None:
        _fail_first(frame > seq_length, f"frame beyond seqLength={seq_length}", path, lines, "frame", vals[:, 0])
    _fail_first(vals[:, 4] < 0, "negative width", path, lines, "w", vals[:, 4])
    _fail_first(vals[:, 5] < 0, "negative height", path, lines, "h", vals[:, 5])
    return frame, ident


def _check_unique_ids(frame: np.ndarray, ident: np.ndarray, path, lines: np.ndarray) -> None:
    if frame.shape[0] < 2:
        return
    order = np.lexsort((lines, ident, frame))
    dup = (frame[order][1:] == frame[order][:-1]) & (ident[order][1:] == ident[order][:-1])
    if dup.any():
        k = order[1:][int(np.flatnonzero(dup)[0])]
        raise DataFormatError(
            f"id {ident[k]} appears twice in frame {frame[k]}", path, int(lines[k]), "id"
        )


def read_gt(path, seq_length: int | None = None) -> MOTRows:
    """Parse a MOTChallenge ``gt.txt`` (9 columns ``frame,id,x,y,w,h,flag,class,visibility``).

    ``conf`` holds the flag column (0 = ignore, 1 = scored). ``seq_length`` (from seqinfo)
    bounds the frame numbers. Duplicate ids within a frame are an error.
    """
    vals, _, lines = read_table(path, 9, 9, _GT_FIELDS)
    if vals.shape[0] == 0:
        return _empty_rows(str(path))
    frame, ident = _check_common(vals, lines, path, seq_length)
    cls = _as_int(vals[:, 7], path, lines, "class")
    _check_unique_ids(frame, ident, path, lines)
    return MOTRows(str(path), frame, ident, vals[:, 2:6].copy(), vals[:, 6].copy(), cls, vals[:, 8].copy(), lines)


def _read_scored(path, seq_length, fields, unique_ids: bool) -> MOTRows:
    vals, ncols, lines = read_table(path, 7, 10, fields)
    if vals.shape[0] == 0:
        return _empty_rows(str(path))
    frame, ident = _check_common(vals, lines, path, seq_length)
    if unique_ids:
        _check_unique_ids(frame, ident, path, lines)
    c8 = vals[:, 7]
    integral = (ncols >= 8) & (c8 == np.round(np.nan_to_num(c8))) & (np.abs(np.nan_to_num(c8)) <= _INT_LIMIT)
    cls = np.where(integral, np.nan_to_num(c8, nan=-1.0), -1.0).astype(np.int64)
    vis = np.full(vals.shape[0], -1.0)
    return MOTRows(str(path), frame, ident, vals[:, 2:6].copy(), vals[:, 6].copy(), cls, vis, lines)


def read_detections(path, seq_length: int | None = None) -> MOTRows:
    """Parse a MOTChallenge ``det.txt`` (10 columns, score in column 7; 7-9 columns accepted).

    ``conf`` is the detector score; ``id`` is whatever the file holds (usually -1); ``cls`` is
    column 8 when it is an integer, else -1; ``vis`` is -1.
    """
    return _read_scored(path, seq_length, _DET_FIELDS, unique_ids=False)


def read_results(path, seq_length: int | None = None) -> MOTRows:
    """Parse a tracker result file (10 columns ``frame,id,x,y,w,h,conf,-1,-1,-1``; 7-9 accepted).

    Duplicate ids within a frame are an error. ``cls`` is column 8 when it is an integer (TrackEval
    reads it as the tracker class), else -1.
    """
    return _read_scored(path, seq_length, _RES_FIELDS, unique_ids=True)


# --------------------------------------------------------------------------- writers
def _fmt(v: float) -> str:
    """Shortest text that reads back to exactly ``v`` (``260`` rather than ``260.0``)."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _validated(frame, ids, xywh, extra: dict[str, np.ndarray]):
    frame = np.asarray(frame).reshape(-1)
    ids = np.asarray(ids).reshape(-1)
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    k = frame.shape[0]
    for name, arr in (("ids", ids), ("xywh", xywh), *extra.items()):
        if arr.shape[0] != k:
            raise ValueError(f"{name} has {arr.shape[0]} rows, frame has {k}")
    for name, arr in (("frame", frame), ("ids", ids)):
        a = np.asarray(arr, dtype=np.float64)
        if k and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
            raise ValueError(f"{name} must hold integers")
    frame = frame.astype(np.int64)
    ids = ids.astype(np.int64)
    if k and frame.min() < 1:
        raise ValueError(f"frame numbers are 1-based, got {frame.min()}")
    if not np.all(np.isfinite(xywh)):
        raise ValueError("xywh contains NaN or inf")
    if k and (xywh[:, 2:] < 0).any():
        raise ValueError("xywh has a negative width or height")
    for name, arr in extra.items():
        if not np.all(np.isfinite(np.asarray(arr, dtype=np.float64))):
            raise ValueError(f"{name} contains NaN or inf")
    return frame, ids, xywh


def write_results(path, frame, ids, xywh, conf=None) -> None:
    """Write a MOTChallenge result file, atomically.

    ``frame`` (K,) 1-based ints, ``ids`` (K,) ints, ``xywh`` (K, 4) pixels (1-based x, y as in
    MOTChallenge files), ``conf`` (K,) or None (-> 1). Rows ``frame,id,x,y,w,h,conf,-1,-1,-1``
    sorted by frame then id. Raises ValueError on bad shapes/values or a duplicate id in a frame.
    Accepts numpy arrays, torch tensors or lists.
    """
    frame = _to_numpy(frame)
    conf_arr = np.ones(len(frame)) if conf is None else np.asarray(_to_numpy(conf), np.float64).reshape(-1)
    frame, ids, xywh = _validated(frame, _to_numpy(ids), _to_numpy(xywh), {"conf": conf_arr})
    order = np.lexsort((ids, frame))
    dup = (np.diff(frame[order]) == 0) & (np.diff(ids[order]) == 0)
    if dup.any():
        k = order[1:][np.flatnonzero(dup)[0]]
        raise ValueError(f"id {ids[k]} appears twice in frame {frame[k]}")
    out = [
        f"{frame[k]},{ids[k]},{_fmt(xywh[k, 0])},{_fmt(xywh[k, 1])},{_fmt(xywh[k, 2])},"
        f"{_fmt(xywh[k, 3])},{_fmt(conf_arr[k])},-1,-1,-1\n"
        for k in order
    ]
    atomic_write_text(path, "".join(out))


def write_gt(path, frame, ids, xywh, flag, cls, vis) -> None:
    """Write a MOTChallenge ``gt.txt`` (9 columns), sorted by frame then id, atomically.

    ``flag`` (K,) 0/1, ``cls`` (K,) int class, ``vis`` (K,) visibility in [0, 1].
    """
    flag = np.asarray(_to_numpy(flag)).reshape(-1)
    cls = np.asarray(_to_numpy(cls)).reshape(-1)
    vis = np.asarray(_to_numpy(vis), np.float64).reshape(-1)
    frame, ids, xywh = _validated(_to_numpy(frame), _to_numpy(ids), _to_numpy(xywh), {"flag": flag, "cls": cls, "vis": vis})
    order = np.lexsort((ids, frame))
    out = [
        f"{frame[k]},{ids[k]},{_fmt(xywh[k, 0])},{_fmt(xywh[k, 1])},{_fmt(xywh[k, 2])},"
        f"{_fmt(xywh[k, 3])},{int(flag[k])},{int(cls[k])},{_fmt(vis[k])}\n"
        for k in order
    ]
    atomic_write_text(path, "".join(out))


def write_detections(path, frame, xywh, score) -> None:
    """Write a MOTChallenge ``det.txt`` (``frame,-1,x,y,w,h,score,-1,-1,-1``), sorted by frame."""
    score = np.asarray(_to_numpy(score), np.float64).reshape(-1)
    frame_np = np.asarray(_to_numpy(frame)).reshape(-1)
    frame, _, xywh = _validated(frame_np, -np.ones(frame_np.shape[0]), _to_numpy(xywh), {"score": score})
    order = np.argsort(frame, kind="stable")
    out = [
        f"{frame[k]},-1,{_fmt(xywh[k, 0])},{_fmt(xywh[k, 1])},{_fmt(xywh[k, 2])},"
        f"{_fmt(xywh[k, 3])},{_fmt(score[k])},-1,-1,-1\n"
        for k in order
    ]
    atomic_write_text(path, "".join(out))


def _to_numpy(x):
    """Tensors (any device) and sequences -> numpy."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
