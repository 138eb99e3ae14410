"""Evaluate MOTChallenge tracking results: ``python evaluate.py --results DIR --data ROOT --out DIR``.

Scores every ``DIR/<sequence>.txt`` against ``ROOT/<split>/<sequence>/gt/gt.txt`` with the official
MOT17 protocol (TrackEval's numbers; ``--mode motmetrics`` for py-motmetrics' conventions), prints
a TrackEval-like table and writes ``summary.csv`` / ``summary.json`` into ``--out``.
Running a tracker (``--tracker NAME --checkpoint PATH``) is not available yet.
Exit status: 0 all sequences evaluated, 1 some sequence failed (named in the report), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, help="folder of result files <sequence>.txt to evaluate")
    p.add_argument("--data", type=Path, help="dataset root (holding train/ test/) or split folder; default: "
                                             "data/MOT17, else data/synthetic")
    p.add_argument("--split", default="train", help="split folder under --data (default: train)")
    p.add_argument("--seqs", nargs="+", help="evaluate only these sequences (default: every result file)")
    p.add_argument("--out", type=Path, help="write summary.csv and summary.json here (default: the results folder)")
    p.add_argument("--workers", type=int, default=1, help="evaluate sequences in N processes")
    p.add_argument("--mode", choices=["official", "motmetrics"], default="official",
                   help="official: TrackEval's conventions (default); motmetrics: py-motmetrics 1.4.0's")
    p.add_argument("--protocol", choices=["mot17", "mot16", "mot20", "none"], default="mot17",
                   help="GT/distractor preprocessing (none: custom data, no class filter or distractor removal)")
    p.add_argument("--matching", choices=["trackeval", "motmetrics"], help="override the per-frame matching rule")
    p.add_argument("--mt-rule", choices=["gt", "ge"], help="override mostly-tracked: > 0.8 (gt) or >= 0.8 (ge)")
    p.add_argument("--frag-rule", choices=["trackeval", "motmetrics"], help="override the fragmentation rule")
    p.add_argument("--no-hota", action="store_true", help="skip HOTA (computed with the trackeval package)")
    p.add_argument("--vis", action="store_true", help="write an MP4 per sequence (not available yet)")
    g = p.add_argument_group("running a tracker (not available yet)")
    g.add_argument("--tracker", help="tracker name to run before evaluating")
    g.add_argument("--checkpoint", type=Path)
    g.add_argument("--detections", default="DPM,FRCNN,SDP")
    return p


def _default_data_root() -> Path:
    from deepmot.errors import MissingDataError

    for cand in (REPO / "data" / "MOT17", REPO / "data" / "synthetic"):
        if cand.is_dir():
            return cand
    raise MissingDataError("no dataset found; pass --data ROOT (a MOTChallenge folder with train/ or test/)",
                           REPO / "data")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tracker or args.checkpoint:
        print("error: running a tracker from evaluate.py (--tracker/--checkpoint) is not implemented yet; "
              "run the tracker to write result files, then use --results DIR", file=sys.stderr)
        return 2
    if args.vis:
        print("error: --vis is not implemented yet", file=sys.stderr)
        return 2
    if args.results is None:
        print("error: --results DIR is required", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2

    from deepmot.datasets.mot import discover_sequences
    from deepmot.errors import DataFormatError, MissingDataError
    from deepmot.evaluation import MODES, Conventions, evaluate_tasks, format_report, tasks_from_folders, write_summary

    base = MODES[args.mode]
    conv = Conventions(args.matching or base.matching, args.mt_rule or base.mt, args.frag_rule or base.frag)
    try:
        root = args.data if args.data is not None else _default_data_root()
        sequences = discover_sequences(root, args.split)
        tasks, errors = tasks_from_folders(args.results, sequences, args.seqs)
    except (DataFormatError, MissingDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tasks and not errors:
        print(f"error: no result files (*.txt) in {args.results}", file=sys.stderr)
        return 2
    ev = evaluate_tasks(tasks, args.protocol, conv, workers=args.workers, hota=not args.no_hota)
    ev.errors.update(errors)
    print(format_report(ev))
    csv_path, json_path = write_summary(ev, args.out or args.results)
    print(f"wrote {csv_path} and {json_path}")
    return 1 if ev.errors else 0


if __name__ == "__main__":
    sys.exit(main())
