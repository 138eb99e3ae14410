"""Reports of an :class:`~deepmot.evaluation.evaluator.Evaluation`: a TrackEval-like text table,
``summary.csv`` and ``summary.json`` (both written atomically).

Printed ratios are percent rounded to 3 decimals (as TrackEval prints them); the CSV and JSON keep
full float64 fractions in [0, 1] (``repr`` precision). Undefined values (NaN: e.g. MOTP without a
match) are ``null`` in the JSON (strict JSON), ``nan`` in the CSV and ``-`` on screen. A sequence
without GT objects gets TrackEval's MOTA ``(TP - FP - IDSW) / max(1, GT)`` = ``-FP``; the report
says so under the tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from deepmot.fileio import atomic_write_text

__all__ = ["TABLES", "PERCENT_FIELDS", "format_metric", "format_table", "format_report", "write_summary"]

#: Printed tables: title -> columns. Integers print as integers, ratios as percent.
TABLES = {
    "HOTA": ["HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA"],
    "CLEAR": ["MOTA", "MOTP", "MOTP_dist", "Rcll", "Prcn", "TP", "FN", "FP", "IDSW", "MT", "PT", "ML", "Frag"],
    "Identity": ["IDF1", "IDR", "IDP", "IDTP", "IDFN", "IDFP"],
    "Count": ["Dets", "GT_Dets", "IDs", "GT_IDs", "Removed"],
}
_INT_FIELDS = {"TP", "FN", "FP", "IDSW", "MT", "PT", "ML", "Frag", "IDTP", "IDFN", "IDFP", "Dets", "GT_Dets",
               "IDs", "GT_IDs", "Removed", "Frames", "IDt", "IDa", "IDm"}


#: ratios printed as percent (3 decimals, TrackEval's tables); stored as fractions in CSV/JSON
PERCENT_FIELDS = {c for cols in TABLES.values() for c in cols} - _INT_FIELDS


def format_metric(key: str, value) -> str:
    """How a person reads metric ``key``: ratios (:data:`PERCENT_FIELDS`) in percent with 3
    decimals (``0.60351 -> "60.351"``), counts as integers, anything else with 4 significant digits."""
    if value is None:
        return "-"
    if key in PERCENT_FIELDS:
        return f"{100 * float(value):.3f}"
    if key in _INT_FIELDS:
        return str(int(value))
    return f"{float(value):.4g}"


def _cell(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in _INT_FIELDS:
        return str(int(value))
    return f"{100 * float(value):.3f}"


def format_table(title: str, columns: list[str], rows: dict[str, dict]) -> str:
    """One fixed-width table: first column the sequence names, then ``columns``."""
    present = [c for c in columns if any(c in r for r in rows.values())]
    if not present:
        return ""
    name_w = max([len(title) + 2] + [len(n) for n in rows]) + 2
    widths = [max(len(c), 8) + 2 for c in present]
    lines = [f"{title:<{name_w}}" + "".join(f"{c:>{w}}" for c, w in zip(present, widths))]
    for name, r in rows.items():
        lines.append(f"{name:<{name_w}}" + "".join(f"{_cell(c, r.get(c)):>{w}}" for c, w in zip(present, widths)))
    return "\n".join(lines)


def format_report(ev) -> str:
    """The whole printed report: conventions, tables per metric family, errors, timing."""
    out = [f"protocol: {ev.protocol}"]
    out += [f"{k}: {v}" for k, v in ev.conventions.items()]
    rows = dict(ev.sequences)
    if ev.combined:
        rows["COMBINED"] = ev.combined
    for title, cols in TABLES.items():
        t = format_table(title, cols, rows)
        if t:
            out += ["", t]
    if "HOTA" not in ev.combined and ev.combined:
        out += ["", "HOTA: not computed (install the 'trackeval' package)"]
    no_gt = [n for n, r in ev.sequences.items() if r.get("GT_Dets") == 0]
    if no_gt:
        out += ["", f"no GT objects in {', '.join(no_gt)}: MOTA there is -FP (TrackEval divides by "
                    "max(1, GT)); MOTP_dist without a match is undefined (-)"]
    if ev.errors:
        out += ["", f"{len(ev.errors)} sequence(s) NOT evaluated (COMBINED excludes them):"]
        out += [f"  {name}: {msg}" for name, msg in ev.errors.items()]
    n_frames = sum(int(r.get("Frames", 0)) for r in ev.sequences.values())
    fps = n_frames / ev.wall_seconds if ev.wall_seconds > 0 else float("inf")
    out += ["", f"evaluated {len(ev.sequences)} sequence(s), {n_frames} frames in {ev.wall_seconds:.2f} s "
                f"({fps:.0f} frames/s, {ev.workers} worker(s))"]
    return "\n".join(out)


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def _json_safe(v):
    """NaN / inf (undefined ratios) -> None, so ``summary.json`` is strict JSON (null)."""
    v = _plain(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_summary(ev, out_dir) -> tuple[Path, Path]:
    """Write ``out_dir/summary.csv`` (one row per sequence + COMBINED) and ``out_dir/summary.json``
    (everything, with conventions, errors and timings). Returns the two paths."""
    out_dir = Path(out_dir)
    rows = dict(ev.sequences)
    if ev.combined:
        rows["COMBINED"] = ev.combined
    keys: list[str] = []
    for r in rows.values():
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sequence"] + keys)
    for name, r in rows.items():
        w.writerow([name] + [repr(_plain(r[k])) if isinstance(_plain(r.get(k)), float) else _plain(r.get(k, ""))
                             for k in keys])
    csv_path, json_path = out_dir / "summary.csv", out_dir / "summary.json"
    atomic_write_text(csv_path, buf.getvalue())
    data = _json_safe(ev.to_dict())
    atomic_write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return csv_path, json_path
