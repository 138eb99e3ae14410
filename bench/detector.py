"""The detector's matcher / loss table (prints a markdown table; numbers go to BENCHMARKS.md).

One row per box-head matcher (``iou`` = torchvision, ``hungarian``, ``aligned``, ``deta_stage2``,
``ot``, ``uot``) and per classification loss (focal, RS, BRS, AP, BAP), and the RPN (dense stage,
~10^4 anchors per image here) with RS / BRS. Every row trains the same detector
(``configs/detector_tiny.yaml``) with the same schedule and seeds through :func:`train_detector` and
reports validation AP / AP50 at the half-way and the final step (mean and spread over seeds),
seconds per iteration, and the share of each step spent in the assignment + loss of the box head
and of the RPN.

    python bench/detector.py [--rows iou,hungarian,...] [--steps 600] [--seeds 0,1,2] [--data ROOT]

Every row is a full training run: on a 2-core CPU use short schedules and say so.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trackers.detection.train import config_from_args, train_detector  # noqa: E402

_SET = dict(samples=0, box_loss="l1_giou")  # the set-prediction matchers score every proposal
ROWS: dict[str, list[str]] = {
    "iou": [],  # torchvision: IoU >= 0.5, 128 samples at 25 %, CE + smooth L1
    "hungarian": [f"model.roi.{k}={v}" for k, v in {"matcher": "hungarian", "cls_loss": "focal", **_SET}.items()],
    "aligned": ["model.roi.matcher=aligned", "model.roi.samples=0"],
    "deta_stage2": ["model.roi.matcher=deta_stage2", "model.roi.cls_loss=focal"],
    "ot": [f"model.roi.{k}={v}" for k, v in {"matcher": "ot", "cls_loss": "focal", **_SET}.items()],
    "uot": [f"model.roi.{k}={v}" for k, v in {"matcher": "uot", "cls_loss": "focal", **_SET}.items()],
    "focal": ["model.roi.cls_loss=focal", "model.roi.samples=0"],
    "rs": ["model.roi.cls_loss=rs", "model.roi.samples=0", "model.roi.box_loss=l1_giou", "model.roi.self_balance=true"],
    "brs": ["model.roi.cls_loss=brs", "model.roi.samples=0", "model.roi.box_loss=l1_giou", "model.roi.self_balance=true"],
    "ap": ["model.roi.cls_loss=ap", "model.roi.samples=0"],
    "bap": ["model.roi.cls_loss=bap", "model.roi.samples=0"],
    "rpn-rs": ["model.rpn.cls_loss=rs", "model.rpn.samples=0"],
    "rpn-brs": ["model.rpn.cls_loss=brs", "model.rpn.samples=0"],
}


def _read(run_dir: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["key"], {})[int(row["step"])] = float(row["value"])
    return out


def run_row(name: str, steps: int, seed: int, data: str | None, threads: int, val_every: int = 5) -> dict[str, float]:
    """Train one row for one seed; -> AP / AP50 at steps // 2 and at the end, s/it, loss shares."""
    sets = ROWS[name] + [f"data.val_every={val_every}", f"steps={steps}", f"seed={seed}", "test_at_end=false",
                         f"eval_every={max(1, steps // 2)}", f"num_threads={threads}", f"checkpoint_every={steps}", "log_every=10"]
    cfg = config_from_args(None, sets, data=data, name=f"bench-detector/{name}-s{seed}")
    m = _read(train_detector(cfg))
    mid, end = steps // 2, steps
    its = list(m["s_per_iter"].values())[1:] or list(m["s_per_iter"].values())  # first window has warm-up I/O
    return {"AP_mid": m["val/AP"][mid], "AP50_mid": m["val/AP50"][mid], "AP_end": m["val/AP"][end],
            "AP50_end": m["val/AP50"][end], "s_it": float(np.mean(its)),
            "roi_share": float(np.mean(list(m["roi_assign_loss_share"].values()))),
            "rpn_share": float(np.mean(list(m["rpn_assign_loss_share"].values())))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows ({', '.join(ROWS)})")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default=None, help="dataset root (default: the built-in synthetic set)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-every", type=int, default=5, help="every k-th validation frame enters the AP")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"| row | AP @{args.steps // 2} | AP50 @{args.steps // 2} | AP @{args.steps} | AP50 @{args.steps} "
          "| s/it | box-head assign+loss | RPN assign+loss |")
    print("|---|---|---|---|---|---|---|---|")
    for name in rows:
        res = [run_row(name, args.steps, s, args.data, args.threads, args.val_every) for s in seeds]

        def ms(key: str, pct: bool = True) -> str:
            v = np.array([r[key] for r in res]) * (100 if pct else 1)
            return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"

        print(f"| {name} | {ms('AP_mid')} | {ms('AP50_mid')} | {ms('AP_end')} | {ms('AP50_end')} | "
              f"{np.mean([r['s_it'] for r in res]):.2f} | {ms('roi_share')} % | {ms('rpn_share')} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
