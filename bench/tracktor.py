"""Tracktor settings on a split (prints a markdown table; numbers go to BENCHMARKS.md).

Each row is one set of ``tracktor.*`` overrides (``key=value`` joined by ``;``), run with the same
weights over every sequence of ``--split`` (all detector variants) and scored with the official
MOT17 protocol. Choose settings on ``val`` only; the test split is measured once with the chosen row
through ``evaluate.py``.

    python bench/tracktor.py --data ROOT --split val --rows "" "reid_sim=0.2" "det_thresh=0.3;reg_thresh=0.3"
    python bench/tracktor.py --data ROOT --speed 10,30 [--frames 40]

``--speed`` times Tracktor at a fixed number of targets instead: K pedestrian-sized boxes on a grid,
tracked over the first ``--frames`` frames of the split's first sequence, every box kept alive
(score and NMS thresholds off, no births after the first frame). Inference: one
:meth:`TracktorTracker.step` per frame (``configs/tracktor_synthetic.yaml``'s values otherwise).
Training: one DeepMOT step per frame as ``train.py --tracker tracktor`` takes it (regression of the
K boxes with gradient, criterion with the shipped DHN against the same K boxes as GT, backward, Adam
step on the box-regression layer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmot.config import load_config  # noqa: E402
from deepmot.datasets import Sequence  # noqa: E402
from deepmot.datasets.mot import discover_sequences  # noqa: E402
from deepmot.engine.inference import evaluate_tracker  # noqa: E402
from trackers.multi_config import InferenceFileConfig  # noqa: E402
from trackers.tracktor.config import TracktorConfig  # noqa: E402
from trackers.tracktor.model import load_tracktor_net  # noqa: E402
from trackers.tracktor.tracker import tracktor_factory  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "trackers" / "detection" / "weights" / "detector_tiny_synthetic.pth"
CHOSEN = Path(__file__).resolve().parents[1] / "configs" / "tracktor_synthetic.yaml"


def _grid(k: int, w: int, h: int) -> torch.Tensor:
    """``(k, 4)`` boxes 30 x 75 px on a grid over a ``w x h`` frame."""
    cols = int(np.ceil(np.sqrt(k * w / h)))
    rows = int(np.ceil(k / cols))
    xs = (np.arange(k) % cols + 0.5) * w / cols
    ys = (np.arange(k) // cols + 0.5) * h / rows
    c = torch.tensor(np.stack([xs, ys], 1), dtype=torch.float32)
    half = torch.tensor([15.0, 37.5])
    return torch.cat([c - half, c + half], 1)


def speed(args, net) -> None:
    """Frames/s of inference and of training steps at each target count of ``--speed``."""
    from deepmot.criterion import DeepMOTLoss
    from deepmot.engine.deepmot_train import build_dhn
    from trackers.tracktor.tracker import TracktorTracker
    from trackers.tracktor.trainable import TRAINED, TracktorTrainTracks

    seq = Sequence(discover_sequences(args.data, args.split)[0])
    frames = [seq[i].image for i in range(min(args.frames, len(seq)))]
    h, w = frames[0].shape[:2]
    base = load_config(InferenceFileConfig, CHOSEN, ["tracktor.det_thresh=0.0", "tracktor.reg_thresh=0.0",
                                                     "tracktor.reg_nms=1.0", "tracktor.det_nms=1.0"]).tracktor
    dhn = build_dhn(None, torch.device("cpu"))
    print(f"| targets | inference frames/s (mean live tracks) | training frames/s |")
    print("|---|---|---|")
    for k in args.speed:
        boxes = _grid(k, w, h)
        tr = TracktorTracker(net, base)
        tr.step(frames[0], boxes, torch.ones(k), 1)
        live, t0 = 0, time.perf_counter()
        for i, img in enumerate(frames[1:], start=2):
            tr.step(img, torch.zeros(0, 4), torch.zeros(0), i)
            live += len(tr.active)
        inf = (len(frames) - 1) / (time.perf_counter() - t0)
        crit = DeepMOTLoss(dhn, delta=0.5, temperature=100.0, w_ids=0.0)
        params = [p for n, p in net.named_parameters() if n in TRAINED]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=1e-4)
        tracks = TracktorTrainTracks(net, True, "box_head")
        gen = torch.Generator().manual_seed(0)
        tracks.add(frames[0], boxes, gen)
        gt_ids = torch.arange(k)
        t0 = time.perf_counter()
        memory = None
        for img in frames[1:]:
            out = tracks.step(img, gen)
            res = crit(out.boxes, out.ids, boxes, gt_ids, (w, h), memory)
            opt.zero_grad()
            res.loss.backward()
            opt.step()
            memory = res.memory
            tracks.advance(out)
        train = (len(frames) - 1) / (time.perf_counter() - t0)
        print(f"| {k} | {inf:.1f} ({live / (len(frames) - 1):.1f}) | {train:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED)
    p.add_argument("--rows", nargs="+", default=[""], help="';'-joined tracktor overrides per row ('' = defaults)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench_tracktor"))
    p.add_argument("--speed", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="time inference and training at these numbers of targets (e.g. 10,30) instead")
    p.add_argument("--frames", type=int, default=40, help="--speed: frames of the first sequence")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = load_tracktor_net(args.checkpoint)
    if args.speed:
        speed(args, net)
        return
    seqs = [Sequence(s) for s in discover_sequences(args.data, args.split)]
    print(f"| tracktor overrides ({args.split}, {len(seqs)} sequences) | MOTA | IDF1 | HOTA | IDSW | FP | FN | FPS |")
    print("|---|---|---|---|---|---|---|---|")
    for i, row in enumerate(args.rows):
        over = [x.strip() for x in row.split(";") if x.strip()]
        cfg = load_config(TracktorConfig, None, over)
        t0 = time.time()
        m = evaluate_tracker(tracktor_factory(net, cfg), seqs, args.out / f"row{i}", show_progress=False)
        hota = 100 * m.get("HOTA", float("nan"))
        print(f"| {row or 'defaults'} | {100 * m['MOTA']:.2f} | {100 * m['IDF1']:.2f} | {hota:.2f} "
              f"| {int(m['IDSW'])} | {int(m['FP'])} | {int(m['FN'])} | {m['FPS']:.1f} |  ({time.time() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
