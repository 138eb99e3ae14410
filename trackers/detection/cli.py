"""The detector's two command-line modes, called from ``train.py --detector`` and
``evaluate.py --detector``: argument wiring only, the work is in :mod:`.train` and :mod:`.evaluate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["train_main", "evaluate_main", "SHIPPED"]

REPO = Path(__file__).resolve().parents[2]
#: The detector shipped for the built-in synthetic data (recipe in weights/README.md).
SHIPPED = Path(__file__).resolve().parent / "weights" / "detector_tiny_synthetic.pth"


def train_main(args, parser) -> int:
    """``train.py --detector [--config] [--data] [--pretrained] [--set] [--resume] [--name]``."""
    from deepmot.config import ConfigError
    from deepmot.errors import DataFormatError, MissingDataError
    from trackers.detection.train import config_from_args, train_detector

    try:
        cfg = config_from_args(args.config, list(args.overrides), data=args.data, pretrained=args.pretrained,
                               name=args.name, resume=args.resume, repo=REPO)
        train_detector(cfg, resume=args.resume)
    except (ConfigError, DataFormatError, MissingDataError) as e:  # one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


def evaluate_main(checkpoint, root: Path, folder: str, frame_range: str | None, out: Path | None,
                  score_thresh: float = 0.5, threads: int | None = None) -> int:
    """Detect on ``root/folder`` (``frame_range`` of each sequence), print COCO AP / AP50 / AP75 /
    recall (and AP50 per visibility bucket) where GT exists, write ``<out>/summary.json`` and the
    private detections ``<out>/<folder>/<sequence>/det/det.txt``. Exit status 0, or 2 on bad input."""
    import time

    import torch

    from deepmot.config import ConfigError
    from deepmot.progress import progress
    from deepmot.errors import DataFormatError, MissingDataError
    from trackers.detection.data import FrameSet
    from trackers.detection.evaluate import coco_metrics, detect_frames, write_private_detections
    from trackers.detection.train import load_trained

    if threads:
        torch.set_num_threads(threads)
    checkpoint = Path(checkpoint)
    try:
        model = load_trained(checkpoint)
        frames = FrameSet(root, folder, frame_range)
    except (ConfigError, DataFormatError, MissingDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = out or REPO / "runs" / "detections" / f"{checkpoint.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"detecting with {checkpoint} on {len(frames)} frames of {len(frames.sequences)} sequence(s) in "
          f"{root}/{folder}" + (f" [{frame_range}]" if frame_range else "") + f" -> {out}")
    t0 = time.time()
    dets, gts = detect_frames(model, frames, progress=lambda it, desc: progress(it, desc=desc))
    fps = len(frames) / max(1e-9, time.time() - t0)
    paths = write_private_detections(frames, dets, out, folder)
    summary = {"checkpoint": str(checkpoint), "data": str(root), "split": folder, "frame_range": frame_range,
               "frames": len(frames), "fps": fps}
    if any(len(g["boxes"]) for g in gts):
        m = coco_metrics(gts, dets, score_thresh=score_thresh, vis_buckets=True)
        summary["metrics"] = m
        print(f"{'AP':>6} {'AP50':>6} {'AP75':>6} {'recall':>7} {'prec@' + str(score_thresh):>9} "
              f"{'rec@' + str(score_thresh):>8} {'GT':>6}")
        print(f"{100 * m['AP']:6.1f} {100 * m['AP50']:6.1f} {100 * m['AP75']:6.1f} {100 * m['recall']:7.1f} "
              f"{100 * m['precision@thr']:9.1f} {100 * m['recall@thr']:8.1f} {int(m['num_gt']):6d}")
        buckets = [k[5:] for k in m if k.startswith("AP50_vis")]
        print("AP50 by GT visibility: " + ", ".join(f"{b} {100 * m['AP50_' + b]:.1f} ({int(m['num_gt_' + b])} GT)"
                                                    for b in buckets))
    else:
        print("no GT in this split: detections written, nothing scored")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{fps:.1f} frames/s; wrote {len(paths)} det.txt files under {out / folder} and {out / 'summary.json'}")
    print(f"track on them: python evaluate.py --data {out} --split {folder}")
    return 0
