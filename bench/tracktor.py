"""Tracktor settings on a split (prints a markdown table; numbers go to BENCHMARKS.md).

Each row is one set of ``tracktor.*`` overrides (``key=value`` joined by ``;``), run with the same
weights over every sequence of ``--split`` (all detector variants) and scored with the official
MOT17 protocol. Choose settings on ``val`` only; the test split is measured once with the chosen row
through ``evaluate.py``.

    python bench/tracktor.py --data ROOT --split val --rows "" "reid_sim=0.2" "det_thresh=0.3;reg_thresh=0.3"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmot.config import load_config  # noqa: E402
from deepmot.datasets import Sequence  # noqa: E402
from deepmot.datasets.mot import discover_sequences  # noqa: E402
from deepmot.engine.inference import evaluate_tracker  # noqa: E402
from trackers.tracktor.config import TracktorConfig  # noqa: E402
from trackers.tracktor.model import load_tracktor_net  # noqa: E402
from trackers.tracktor.tracker import tracktor_factory  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "trackers" / "detection" / "weights" / "detector_tiny_synthetic.pth"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED)
    p.add_argument("--rows", nargs="+", default=[""], help="';'-joined tracktor overrides per row ('' = defaults)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench_tracktor"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = load_tracktor_net(args.checkpoint)
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
