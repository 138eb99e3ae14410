"""Numeric text tables as MOTChallenge writes them: one row per line, comma or whitespace separated.

:func:`read_table` turns a file into a NaN-padded float64 array plus the column count and the
1-based line number of every row. It reads the file in blocks of whole lines (:data:`CHUNK_BYTES`)
so that memory stays a small multiple of the file size, and parses each block with
:func:`parse_table_fast` (whole-block string operations and one ``map(float, ...)``, no
per-field Python work), falling back to :func:`parse_table_lines` (line by line) for a block the
fast path declines, so the fallback alone decides every error message (file, line and field) and
both give identical arrays on valid input. The grammar is line-local, so the blocks compose to
exactly the whole-file result.

Grammar (both parsers): the text is split at ``"\\n"``; each line is stripped of whitespace and
skipped when empty; a line holding a comma is split at commas (each field stripped), otherwise at
runs of whitespace; every field must be a finite number as Python's ``float()`` reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepmot.errors import DataFormatError, MissingDataError

__all__ = ["read_table", "parse_table_fast", "parse_table_lines"]

# Bytes the fast path accepts; anything else (letters, non-ASCII, "_", NUL...) takes the per-line
# parser, which either reads it exactly as float() does or names the offending field.
_PLAIN_BYTES = b"0123456789eE+-., \t\r\n"

Table = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Bytes of text parsed at a time by :func:`read_table` (whole lines; a longer line is read whole).
CHUNK_BYTES = 1 << 20


def _empty(max_cols: int) -> Table:
    return np.zeros((0, max_cols)), np.zeros(0, np.int64), np.zeros(0, np.int64)


def read_table(path, min_cols: int, max_cols: int, fields: tuple[str, ...]) -> Table:
    """Read a numeric table file -> ``(values (K, max_cols) float64`` NaN-padded, ``ncols (K,)
    int64``, ``lines (K,) int64`` 1-based). ``fields`` names the columns for error messages.

    Raises MissingDataError when the file is absent and DataFormatError (file, line, field) for
    text that is not UTF-8, a row with a column count outside ``[min_cols, max_cols]`` or a field
    that is not a finite number. Peak memory: the output arrays plus one block of text.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError("file is missing", path)
    with open(path, "rb") as f:
        # Pass 1 bounds the row count, so the output is allocated once (no list of parts to join).
        n_max = sum(b.count(b"\n") for b in iter(lambda: f.read(CHUNK_BYTES), b"")) + 1
        f.seek(0)
        values = np.full((n_max, max_cols), np.nan)
        ncols = np.zeros(n_max, np.int64)
        lines = np.zeros(n_max, np.int64)
        k, first_line = 0, 1
        for i, data in enumerate(_line_blocks(f)):
            try:
                text = data.decode("utf-8-sig" if i == 0 else "utf-8")
            except UnicodeDecodeError as e:
                line = first_line + data[: e.start].count(b"\n")
                raise DataFormatError(f"not UTF-8 text ({e.reason})", path, line) from None
            part = parse_table_fast(text, min_cols, max_cols, first_line)
            if part is None:
                part = parse_table_lines(text, path, min_cols, max_cols, fields, first_line)
            n = part[0].shape[0]
            values[k:k + n], ncols[k:k + n], lines[k:k + n] = part
            k += n
            first_line += data.count(b"\n")
    if k == 0:
        return _empty(max_cols)
    for a in (values, ncols, lines):  # drop the rows reserved for blank lines, in place
        a.resize((k,) + a.shape[1:], refcheck=False)
    return values, ncols, lines


def _line_blocks(f):
    """Yield the bytes of binary file ``f`` in blocks of about :data:`CHUNK_BYTES`, each ending
    just after a ``\\n`` (the last one at the end of the file)."""
    rest = b""
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            if rest:
                yield rest
            return
        buf = rest + block
        cut = buf.rfind(b"\n") + 1
        if cut == 0:  # no line end yet: keep reading
            rest = buf
            continue
        yield buf[:cut]
        rest = buf[cut:]


def parse_table_fast(text: str, min_cols: int, max_cols: int, first_line: int = 1) -> Table | None:
    """Whole-text parse of a well-formed table; ``None`` when the text needs
    :func:`parse_table_lines` (unusual characters, a whitespace-separated line in a file with
    commas, a bad column count, a field ``float()`` rejects or a non-finite value).

    On success the result equals :func:`parse_table_lines`'s bit for bit. ``first_line``: the
    file's line number of the text's first line.
    """
    if not text.isascii() or text.encode("ascii").translate(None, _PLAIN_BYTES):
        return None
    stripped = [s.strip() for s in text.split("\n")]
    lines = [i for i, s in enumerate(stripped, start=first_line) if s]
    if not lines:
        return _empty(max_cols)
    body = [s for s in stripped if s]
    joined = "\n".join(body)
    if "," in joined:
        # A comma-free line here becomes one token: right when it holds one number, and declined
        # (bad count or float() failing) when it holds several whitespace-separated ones.
        counts = np.asarray([s.count(",") for s in body], np.int64) + 1
        tokens = joined.replace("\n", ",").split(",")
    else:
        counts = np.asarray([len(s.split()) for s in body], np.int64)
        tokens = joined.split()
    if counts.min() < min_cols or counts.max() > max_cols:
        return None
    try:
        flat = np.fromiter(map(float, tokens), np.float64, count=len(tokens))
    except ValueError:
        return None
    if not np.isfinite(flat).all():
        return None
    k = len(body)
    out = np.full((k, max_cols), np.nan)
    if counts.min() == counts.max():
        out[:, : int(counts[0])] = flat.reshape(k, int(counts[0]))
    else:
        out[np.arange(max_cols) < counts[:, None]] = flat  # row-major: file order
    return out, counts, np.asarray(lines, np.int64)


def parse_table_lines(text: str, path, min_cols: int, max_cols: int, fields: tuple[str, ...],
                      first_line: int = 1) -> Table:
    """Line-by-line parse with the same result as :func:`parse_table_fast`; raises
    DataFormatError naming ``path``, the 1-based line (the text starting at line ``first_line``)
    and the field (``fields[j]`` or ``"columns"``) at the first malformed line."""
    rows: list[list[float]] = []
    ncols: list[int] = []
    lines: list[int] = []
    for lineno, raw in enumerate(text.split("\n"), start=first_line):
        s = raw.strip()
        if not s:
            continue
        parts = [p.strip() for p in s.split(",")] if "," in s else s.split()
        n = len(parts)
        if not min_cols <= n <= max_cols:
            want = str(min_cols) if min_cols == max_cols else f"{min_cols} to {max_cols}"
            raise DataFormatError(f"expected {want} columns, got {n}", path, lineno, "columns")
        vals = []
        for j, p in enumerate(parts):
            try:
                v = float(p)
            except ValueError:
                raise DataFormatError(f"not a number: {p[:40]!r}", path, lineno, fields[j]) from None
            if not math.isfinite(v):
                raise DataFormatError(f"not a finite number: {p[:40]!r}", path, lineno, fields[j])
            vals.append(v)
        vals.extend([math.nan] * (max_cols - n))
        rows.append(vals)
        ncols.append(n)
        lines.append(lineno)
    if not rows:
        return _empty(max_cols)
    return np.asarray(rows, dtype=np.float64), np.asarray(ncols, np.int64), np.asarray(lines, np.int64)
