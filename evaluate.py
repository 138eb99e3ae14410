"""Evaluate MOTChallenge tracking: score result files, or run a tracker first.

``python evaluate.py --results DIR --data ROOT --out DIR`` scores every ``DIR/<sequence>.txt``
against ``ROOT/<split>/<sequence>/gt/gt.txt`` with the official MOT17 protocol (TrackEval's
numbers; ``--mode motmetrics`` for py-motmetrics' conventions), prints a TrackEval-like table and
writes ``summary.csv`` / ``summary.json`` into ``--out``.

Without ``--results`` a tracker runs first (``--tracker siamrpn`` by default, SOT weights from
``--checkpoint``, else the SOT pre-training output ``weights/siamrpn_pretrained.pth``, else the
weights shipped for the synthetic data ``trackers/siamrpn/weights/siamrpn_alex_tiny_synthetic.pth``;
``--tracker tracktor``: detector weights from ``--checkpoint``, else the shipped detector, births
from public detections or, with ``--detections private``, from the detector itself) on the
``--split`` sequences (default ``test``; ``half-val`` = second half of each train sequence) of
the ``--detections`` variants, writes ``<out>/<sequence>.txt``, prints the tracker speed and
evaluates; ``--workers N`` tracks N sequences at once in worker processes. ``--vis`` writes
``<out>/vis/<sequence>.mp4``. Data: ``--data``, else ``data/MOT17``, else the built-in synthetic
set (generated once into ``data/synthetic``).
``--detector [CKPT]`` is the detection mode: a detector checkpoint of ``train.py --detector`` (default:
the shipped trackers/detection/weights/detector_tiny_synthetic.pth) runs on the ``--split`` frames,
COCO AP / AP50 / AP75 / recall are printed and ``<out>/<split>/<sequence>/det/det.txt`` written (a
MOTChallenge tree: ``--data <out>`` then tracks on these private detections).
With ``--results`` every sequence of the split needs a result file (as in TrackEval); a missing
file, a malformed result file or a sequence with a broken ``seqinfo.ini`` is reported (in the
table and as one ``error:`` line on stderr each) and the other sequences are still evaluated;
``--seqs`` limits the evaluation to the sequences named.
Exit status: 0 all sequences evaluated, 1 some sequence failed (named in the report), 2 bad usage.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
#: where ``evaluate.py`` looks for SOT weights when neither --checkpoint nor the config names one
#: (your own SOT pre-training output first, then the weights shipped for the synthetic data)
DEFAULT_CHECKPOINTS = {"siamrpn": [REPO / "weights" / "siamrpn_pretrained.pth",
                                   REPO / "trackers" / "siamrpn" / "weights" / "siamrpn_alex_tiny_synthetic.pth"],
                       "tracktor": [REPO / "trackers" / "detection" / "weights" / "detector_tiny_synthetic.pth"]}
#: ``--detections`` values that pick where Tracktor's births come from instead of detector variants
BIRTH_SOURCES = ("public", "private")
#: splits that are a frame range of another split folder
HALF_SPLITS = {"half-val": ("train", "val-half"), "half-train": ("train", "train-half")}


def build_parser() -> argparse.ArgumentParser:
    from trackers import available_trackers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, help="folder of result files <sequence>.txt to evaluate "
                                                "(without it: run --tracker first)")
    p.add_argument("--data", type=Path, help="dataset root (holding train/ test/) or split folder; default: "
                                             "data/MOT17, else data/synthetic (generated once)")
    p.add_argument("--split", default=None, help="train | test | half-val | half-train | any split folder "
                                                 "(default: train with --results, test when running a tracker)")
    p.add_argument("--seqs", nargs="+", help="evaluate only these sequences (default: every sequence of the split\n"
                                             "and every result file; one without the other is reported, exit 1)")
    p.add_argument("--out", type=Path, help="write results/summary here (default: the results folder; "
                                            "runs/eval/<tracker>-<time> when running a tracker)")
    p.add_argument("--workers", type=int, default=1,
                   help="N processes over sequences: scoring result files (--results, whole sequences or\n"
                        "half splits) or running the tracker and scoring its files (each tracking worker\n"
                        "then uses --threads torch threads, default cores // N)")
    p.add_argument("--mode", choices=["official", "motmetrics"], default="official",
                   help="official: TrackEval's conventions (default); motmetrics: py-motmetrics 1.4.0's")
    p.add_argument("--protocol", choices=["mot17", "mot16", "mot20", "none"], default="mot17",
                   help="GT/distractor preprocessing (none: custom data, no class filter or distractor removal)")
    p.add_argument("--matching", choices=["trackeval", "motmetrics"], help="override the per-frame matching rule")
    p.add_argument("--mt-rule", choices=["gt", "ge"], help="override mostly-tracked: > 0.8 (gt) or >= 0.8 (ge)")
    p.add_argument("--frag-rule", choices=["trackeval", "motmetrics"], help="override the fragmentation rule")
    p.add_argument("--no-hota", action="store_true", help="skip HOTA (computed with the trackeval package)")
    p.add_argument("--vis", action="store_true", help="write <out>/vis/<sequence>.mp4 with ids and FP/FN/IDSW markers")
    p.add_argument("--detector", nargs="?", const="shipped", type=Path, metavar="CKPT",
                   help="detection mode: COCO AP of this detector checkpoint (default: the shipped one) on --split,\n"
                        "and private detections <out>/<split>/<sequence>/det/det.txt")
    g = p.add_argument_group("running a tracker")
    g.add_argument("--tracker", choices=available_trackers(),
                   help="tracker name from the registry (default: siamrpn, or the config's)")
    g.add_argument("--checkpoint", type=Path, help="tracker weights. siamrpn: SOT weights (default "
                                                   "weights/siamrpn_pretrained.pth, the output of\n"
                                                   "`python -m trackers.siamrpn.pretrain`, else the shipped "
                                                   "trackers/siamrpn/weights/siamrpn_alex_tiny_synthetic.pth);\n"
                                                   "tracktor: detector weights of train.py --detector, a Tracktor "
                                                   "checkpoint or a torchvision\nfasterrcnn_resnet50_fpn state dict "
                                                   "(default: the shipped trackers/detection/weights/"
                                                   "detector_tiny_synthetic.pth)")
    g.add_argument("--model", help="SOT architecture: config name in configs/ or YAML (default: the config's)")
    g.add_argument("--config", type=Path, default=None,
                   help="inference YAML (default: configs/mot_inference.yaml; Tracktor with the values\n"
                        "chosen on the synthetic val split: configs/tracktor_synthetic.yaml)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mot.patience=10 (repeatable; values are YAML).\n"
                        "A key inside a mapping sets one entry and keeps the rest:\n"
                        "--set mot.detector_scores.FRCNN=[0.0,0.6] keeps DPM's and SDP's thresholds;\n"
                        "Tracktor's options: --set tracktor.motion=true (trackers/tracktor/config.py)")
    g.add_argument("--detections", default="DPM,FRCNN,SDP",
                   help="public-detector variants to run (comma list; default DPM,FRCNN,SDP).\n"
                        "tracktor also takes public | private: where new tracks come from (det.txt boxes\n"
                        "refined by the detector's RoI head, or the detector itself), on all variants;\n"
                        "the same as --set tracktor.detections=public|private")
    g.add_argument("--device", help="cpu, cuda, auto (default: the config's)")
    g.add_argument("--threads", type=int, help="torch CPU threads (per worker with --workers N; default: torch's, "
                                                 "or cores // N with workers)")
    return p


def _conventions(args):
    from deepmot.evaluation import MODES, Conventions

    base = MODES[args.mode]
    return Conventions(args.matching or base.matching, args.mt_rule or base.mt, args.frag_rule or base.frag)


def _data_root(args) -> Path:
    from deepmot.datasets import resolve_data_root

    return resolve_data_root(args.data, log=print, data_dir=REPO / "data")


def _split(args, default: str) -> tuple[str, str | None]:
    """``--split`` -> (split folder, frame range or None)."""
    split = args.split or default
    return HALF_SPLITS.get(split, (split, None))


def _write_videos(seqs, paths: dict, out: Path, protocol: str) -> None:
    from deepmot.evaluation.vis import write_tracking_video

    for seq in seqs:
        if seq.name in paths:
            path = write_tracking_video(seq, paths[seq.name], out / "vis" / f"{seq.name}.mp4", protocol)
            print(f"wrote {path}")


def _results_mode(args) -> int:
    from dataclasses import replace

    from deepmot.datasets.mot import discover_sequences, half_frame_range
    from deepmot.errors import DataFormatError, MissingDataError
    from deepmot.evaluation import evaluate_tasks, format_report, tasks_from_folders, write_summary

    folder, frame_range = _split(args, "train")
    try:
        root = _data_root(args)
        bad: dict[str, str] = {}  # sequences whose seqinfo.ini is broken: reported, the others evaluated
        sequences = discover_sequences(root, folder, errors=bad)
        tasks, errors = tasks_from_folders(args.results, sequences, args.seqs, bad)
    except (DataFormatError, MissingDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tasks and not errors:
        print(f"error: no result files (*.txt) in {args.results}", file=sys.stderr)
        return 2
    if frame_range is not None:   # a half split: the same files, scored on a window of frames
        tasks = [replace(t, frames=half_frame_range(t.num_frames, frame_range)) for t in tasks]
    ev = evaluate_tasks(tasks, args.protocol, _conventions(args), workers=args.workers, hota=not args.no_hota)
    ev.errors.update(errors)
    print(format_report(ev))
    out = args.out or args.results
    csv_path, json_path = write_summary(ev, out)
    print(f"wrote {csv_path} and {json_path}")
    if args.vis:
        from deepmot.datasets import Sequence

        seqs = [Sequence(s, detections=None, frame_range=frame_range) for s in sequences if s.name in ev.sequences]
        _write_videos(seqs, {n: args.results / f"{n}.txt" for n in ev.sequences}, out, args.protocol)
    return _report_errors(ev)


def _report_errors(ev) -> int:
    """One ``error:`` line on stderr per sequence that was not evaluated; the exit status."""
    for name, msg in ev.errors.items():
        print(f"error: {name} not evaluated: {msg}", file=sys.stderr)
    return 1 if ev.errors else 0


def _find_checkpoint(args, cfg) -> Path | None:
    if args.checkpoint is not None:
        return args.checkpoint
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    for cand in DEFAULT_CHECKPOINTS.get(cfg.tracker, []):
        if cand.is_file():
            return cand
    return None


def _tracker_mode(args) -> int:
    from deepmot.config import ConfigError, load_config, save_config
    from deepmot.datasets import Sequence
    from deepmot.datasets.mot import discover_sequences
    from deepmot.engine.inference import (
        evaluate_results,
        format_timing,
        run_inference,
        run_inference_parallel,
        write_speed,
    )
    from deepmot.errors import DataFormatError, MissingDataError
    from deepmot.evaluation import format_report, write_summary
    from trackers.multi import build_mot_factory
    from trackers.multi_config import InferenceFileConfig

    overrides = list(args.overrides)
    for key, val in (("tracker", args.tracker), ("model", args.model), ("device", args.device)):
        if val is not None:
            overrides.append(f"{key}={val}")
    dets = [d.strip() for d in args.detections.split(",") if d.strip()]
    if args.detections.strip() in BIRTH_SOURCES:   # Tracktor's birth source, every detector variant
        overrides.append(f"tracktor.detections={args.detections.strip()}")
        dets = ["DPM", "FRCNN", "SDP"]
    config = args.config if args.config is not None else REPO / "configs" / "mot_inference.yaml"
    try:
        cfg = load_config(InferenceFileConfig, config if (config.is_file() or args.config) else None, overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = _find_checkpoint(args, cfg)
    if args.detections.strip() in BIRTH_SOURCES and cfg.tracker != "tracktor":
        print(f"error: --detections {args.detections.strip()} picks Tracktor's birth source; tracker "
              f"{cfg.tracker!r} takes detector variants (e.g. --detections DPM,FRCNN,SDP)", file=sys.stderr)
        return 2
    if ckpt is None:
        looked = ", ".join(str(c) for c in DEFAULT_CHECKPOINTS.get(cfg.tracker, [])) or "nowhere"
        print(f"error: no weights for tracker {cfg.tracker!r}: pass --checkpoint PATH (looked for {looked}; "
              "produce SOT weights with `python -m trackers.siamrpn.pretrain`)", file=sys.stderr)
        return 2
    folder, frame_range = _split(args, "test")
    try:
        root = _data_root(args)
        bad: dict[str, str] = {}  # sequences whose seqinfo.ini is broken: reported, the others run
        infos = discover_sequences(root, folder, detections=dets, errors=bad)
        if args.seqs:
            bad = {n: m for n, m in bad.items() if n in set(args.seqs)}
            missing = sorted(set(args.seqs) - {s.name for s in infos} - set(bad))
            if missing:
                raise MissingDataError(f"sequence(s) {missing} not found in split '{folder}'", root)
            infos = [s for s in infos if s.name in set(args.seqs)]
        seqs = [Sequence(s, frame_range=frame_range) for s in infos]
        factory = build_mot_factory(cfg, str(ckpt))
    except (DataFormatError, MissingDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not seqs:
        for name, msg in bad.items():
            print(f"error: {name} not evaluated: {msg}", file=sys.stderr)
        return 1
    parallel = args.workers > 1 and len(seqs) > 1
    if args.threads and not parallel:  # workers set their own
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or REPO / "runs" / "eval" / f"{cfg.tracker}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    cfg.checkpoint = str(ckpt)
    save_config(cfg, out / "config.yaml")
    what = f"{cfg.tracktor.detections} detections" if cfg.tracker == "tracktor" else cfg.model
    print(f"running {cfg.tracker} ({what}, weights {ckpt}) on {len(seqs)} sequence(s) of {root}/{folder}"
          + (f" [{frame_range}]" if frame_range else "") + f" -> {out}")
    from deepmot.machine import describe, load_warning

    print(describe(cfg.device))
    if load_warning():
        print(f"warning: {load_warning()}", file=sys.stderr)
    if parallel:
        print(f"tracking in {min(args.workers, len(seqs))} worker processes")
        build = functools.partial(build_mot_factory, cfg, str(ckpt))
        inf = run_inference_parallel(build, infos, out, workers=args.workers, threads=args.threads,
                                     frame_range=frame_range)
    else:
        inf = run_inference(factory, seqs, out)
    print(format_timing(inf))
    with_gt = [s for s in seqs if s.gt_rows is not None]
    if not with_gt:
        print(f"no GT in split '{folder}': wrote result files only (valid MOTChallenge submissions) in {out}")
        if args.vis:
            _write_videos(seqs, inf.paths, out, args.protocol)
        for name, msg in bad.items():
            print(f"error: {name} not run: {msg}", file=sys.stderr)
        return 1 if bad else 0
    ev = evaluate_results(inf.paths, with_gt, frame_range, args.protocol, _conventions(args), not args.no_hota,
                          workers=args.workers)
    ev.errors.update(bad)
    print()
    print(format_report(ev))
    csv_path, json_path = write_summary(ev, out)
    write_speed(inf, json_path)
    print(f"wrote {csv_path} and {json_path}")
    if args.vis:
        _write_videos(seqs, inf.paths, out, args.protocol)
    return _report_errors(ev)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.detector is not None:  # detection mode lives in trackers/detection
        from trackers.detection.cli import SHIPPED, evaluate_main

        folder, frame_range = _split(args, "test")
        try:
            root = _data_root(args)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        ckpt = SHIPPED if str(args.detector) == "shipped" else args.detector
        return evaluate_main(ckpt, root, folder, frame_range, args.out, threads=args.threads)
    if args.results is not None:
        if args.tracker or args.checkpoint:
            print("error: --results evaluates existing files; drop it to run --tracker/--checkpoint", file=sys.stderr)
            return 2
        return _results_mode(args)
    return _tracker_mode(args)


if __name__ == "__main__":
    sys.exit(main())
