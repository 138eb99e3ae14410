"""The detector's matcher / loss table (prints a markdown table; numbers go to BENCHMARKS.md).

One row per box-head matcher (``iou`` = torchvision, ``hungarian``, ``aligned``, ``deta_stage2``,
``ot``, ``uot``) and per classification loss (focal, RS, BRS, AP, BAP), and the RPN (dense stage,
~10^4 anchors per image here) with RS / BRS. Every row trains the same detector
(``configs/detector_tiny.yaml``) with the same schedule and seeds through :func:`train_detector` and
reports validation AP / AP50 at the half-way and the final step (mean and spread over seeds),
seconds per iteration, and the share of each step spent in the assignment + loss of the box head
and of the RPN.

    python bench/detector.py [--rows iou,hungarian,...] [--steps 600] [--seeds 0,1,2] [--data ROOT]
    python bench/detector.py --part stage [--anchors 14000,57000]

Every row is a full training run: on a 2-core CPU use short schedules and say so. ``--part stage``
times one RPN stage's assignment + loss alone (forward + backward, 2 images, 20 GT each) on random
predictions at the given numbers of anchors per image, for bce / focal / rs / brs / ap / bap: the
dense-stage cost that the bucketed losses cut, without a training run.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import time

import numpy as np
import torch

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
    "brs": ["model.roi.cls_loss=brs", "model.roi.samples=0", "model.roi.box_loss=l1_giou",
            "model.roi.self_balance=true"],
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
                         f"eval_every={max(1, steps // 2)}", f"num_threads={threads}", f"checkpoint_every={steps}",
                         "log_every=10"]
    cfg = config_from_args(None, sets, data=data, name=f"bench-detector/{name}-s{seed}")
    m = _read(train_detector(cfg))
    mid, end = steps // 2, steps
    its = list(m["s_per_iter"].values())[1:] or list(m["s_per_iter"].values())  # first window has warm-up I/O
    return {"AP_mid": m["val/AP"][mid], "AP50_mid": m["val/AP50"][mid], "AP_end": m["val/AP"][end],
            "AP50_end": m["val/AP50"][end], "s_it": float(np.mean(its)),
            "roi_share": float(np.mean(list(m["roi_assign_loss_share"].values()))),
            "rpn_share": float(np.mean(list(m["rpn_assign_loss_share"].values())))}


def stage_timing(anchors: int, cls_loss: str, repeats: int = 3) -> float:
    """Median seconds of one RPN assignment + loss, forward and backward, for 2 images."""
    from torchvision.models.detection._utils import BoxCoder

    from trackers.detection.stages import StageConfig, StageLoss

    g = torch.Generator().manual_seed(0)
    cfg = StageConfig(matcher="iou", cls_loss=cls_loss, pos_iou=0.7, neg_iou=0.3, low_quality=True,
                      samples=256 if cls_loss == "bce" else 0, pos_fraction=0.5)
    stage = StageLoss(cfg, BoxCoder((1.0, 1.0, 1.0, 1.0)), softmax_head=False)
    h, w = 360.0, 640.0
    ctr = torch.rand(2, anchors, 2, generator=g) * torch.tensor([w, h])
    size = torch.rand(2, anchors, 2, generator=g) * torch.tensor([60.0, 150.0]) + torch.tensor([10.0, 25.0])
    refs = torch.cat([ctr - size / 2, ctr + size / 2], -1)
    gt = [refs[b, torch.randperm(anchors, generator=g)[:20]] + 3.0 for b in range(2)]
    sizes = torch.tensor([[h, w], [h, w]])
    mask = torch.ones(2, anchors, dtype=torch.bool)
    times = []
    for _ in range(repeats):
        logits = torch.randn(2, anchors, 1, generator=g).requires_grad_()
        deltas = (0.1 * torch.randn(2, anchors, 4, generator=g)).requires_grad_()
        t0 = time.perf_counter()
        decoded = stage.box_coder.decode_single(deltas.reshape(-1, 4), refs.reshape(-1, 4)).view(2, -1, 4)
        inp = stage.match_input(logits, decoded, refs, mask, sizes, gt)
        a = stage.assign(stage.match_input(logits, decoded, refs, mask, sizes, gt, normalise=False))
        cls, box = stage.loss(inp, a, deltas, refs, gt)
        (cls + box).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows ({', '.join(ROWS)})")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default=None, help="dataset root (default: the built-in synthetic set)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-every", type=int, default=5, help="every k-th validation frame enters the AP")
    ap.add_argument("--part", choices=["table", "stage"], default="table")
    ap.add_argument("--anchors", default="14000,57000", help="--part stage: anchors per image (comma list)")
    args = ap.parse_args(argv)
    if args.part == "stage":
        torch.set_num_threads(args.threads)
        losses = ("bce", "focal", "rs", "brs", "ap", "bap")
        print("| anchors / image | " + " | ".join(losses) + " |")
        print("|---|" + "---|" * len(losses))
        for n in (int(a) for a in args.anchors.split(",")):
            print(f"| {n} | " + " | ".join(f"{1000 * stage_timing(n, c):.0f} ms" for c in losses) + " |", flush=True)
        return 0
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
