"""Grid search of SiamRPN tracking hyper-parameters by single-object success rate.

Tracking hyper-parameters (window influence, penalty k, size lr, instance size, the long-term
mode's thresholds...) are chosen on the **train** split and reported once on the test split;
choosing on the test split would make its number meaningless. Every combination of the grid is
scored with :func:`~trackers.siamrpn.pretrain.evaluate_sot` (each object tracked alone from its
first GT box to its last); the table is printed sorted by success and, with ``--csv``, rewritten
atomically after every combination so that an interrupted search keeps what it measured.

    python -m trackers.siamrpn.tune --weights trackers/siamrpn/weights/siamrpn_alex_tiny_synthetic.pth \\
        --grid window_influence=0.3,0.4,0.5 --grid penalty_k=0.05,0.1,0.2 --csv runs/tune.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from typing import Any

import torch

from deepmot.fileio import atomic_write_text

from .checkpoint import load_pysot_checkpoint
from .model import build_siamrpn
from .pretrain import evaluate_sot
from .params import TrackParams

__all__ = ["parse_grid", "grid_points", "main"]


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["a=1,2", "b=0.5"]`` -> ``{"a": [1, 2], "b": [0.5]}``; keys must be :class:`TrackParams` fields."""
    names = {f.name for f in dataclasses.fields(TrackParams)}
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"grid entry {item!r} must look like name=v1,v2,...")
        if key not in names:
            raise ValueError(f"unknown tracking parameter {key!r} in --grid; known: {', '.join(sorted(names))}")
        grid[key] = [_value(v) for v in values.split(",")]
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def _table(rows: list[dict[str, Any]], keys: list[str], percent: bool = False) -> str:
    """Rows best first as CSV: success and mean IoU as fractions, or (``percent``, the printed
    table) in percent with 3 decimals under ``success_%`` / ``mean_iou_%``."""
    ratios = ("success", "mean_iou")
    head = keys + list(ratios) + ["frames", "seconds"]
    lines = [",".join(f"{k}_%" if percent and k in ratios else k for k in head)]
    for r in sorted(rows, key=lambda r: -r["success"]):
        lines.append(",".join(f"{100 * r[k]:.3f}" if percent and k in ratios else
                              f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in head))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: evaluate every grid point, print the table (best first)."""
    ap = argparse.ArgumentParser(prog="python -m trackers.siamrpn.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="siamrpn_alex_tiny", help="SiamRPN config name or YAML path")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="model-config override (e.g. tracker=SiamRPNLTTracker), repeatable")
    ap.add_argument("--weights", required=True, help="weights to load (PySOT-style state dict)")
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--split", default="train", help="split to choose on (default: train)")
    ap.add_argument("--sequences", nargs="*", default=None, help="only these sequences (base names)")
    ap.add_argument("--max-tracks", type=int, default=None, help="at most this many objects")
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                    help="tracking parameter and its values, repeatable (none: the config's values)")
    ap.add_argument("--csv", help="write the table here (atomically, after every grid point)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_siamrpn(args.model, args.set)
    load_pysot_checkpoint(model, args.weights)
    grid = parse_grid(args.grid)
    keys = list(grid)
    rows: list[dict[str, Any]] = []
    for point in grid_points(grid):
        params = TrackParams.from_config(model.cfg, **point)
        t = time.time()
        res = evaluate_sot(model, args.data, args.split, max_tracks=args.max_tracks,
                           sequences=args.sequences, params=params)
        row = dict(point, success=res["success"], mean_iou=res["mean_iou"], frames=int(res["frames"]),
                   seconds=round(time.time() - t, 1))
        rows.append(row)
        print(" ".join(f"{k}={100 * v:.3f}%" if k in ("success", "mean_iou") else f"{k}={v}"
                       for k, v in row.items()), flush=True)
        if args.csv:
            atomic_write_text(args.csv, _table(rows, keys))
    print(_table(rows, keys, percent=True), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
