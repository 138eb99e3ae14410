"""Benchmark: what DeepMOT fine-tuning does to a SiamRPN's identity keeping (issue #22 item 4).

For each weights file, against the starting weights (``--start``, default the shipped
``siamrpn_alex_tiny`` synthetic weights):

* **weight change** per part of the network, ``||W - W_start|| / ||W_start||`` (backbone convs
  and BatchNorms, neck, classification and regression heads);
* **single-object tracking on the validation split**: every scored object of ``--split`` tracked
  alone from its first GT box (as ``trackers.siamrpn.pretrain.evaluate_sot``); per tracked frame,
  the IoU with its own GT and with the other objects' GT. ``success``: own IoU > 0.5; ``swap``:
  own IoU <= 0.5 while the box sits on another object (IoU > 0.5 with one) — an identity switch of
  the SOT; ``lost``: neither. ``score ok / score swap / score lost``: the SOT's mean best score on
  those frames (the multi-object tracker keeps writing a box whose score stays above its
  ``coast_score``, so high scores on swapped or lost frames become FP and ID switches).

    python bench/finetune_identity.py runs/a/*/siamrpn_deepmot.pth runs/b/*/siamrpn_deepmot.pth
    python bench/finetune_identity.py --split val --data data/synthetic --threads 1 W1 W2

Prints one table; a file that does not exist is reported, not fatal. Costs one batched SOT pass
over the split per weights file (about 30 s of one idle core on the default val split).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from deepmot.boxes import box_iou, xywh_to_xyxy
from deepmot.datasets import read_gt
from deepmot.datasets.layout import gt_sequences
from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS
from trackers.siamrpn.tracker import BatchedSiamRPNTracker

GROUPS = (("backbone conv", r"^backbone\..*\.(weight|bias)$", "conv"),
          ("backbone BN", r"^backbone\..*\.(weight|bias)$", "bn"),
          ("neck", r"^neck\.", None), ("cls head", r"^(rpn_head|head)\..*cls", None),
          ("loc head", r"^(rpn_head|head)\..*loc", None))


def weight_change(start: dict, new: dict) -> dict[str, float]:
    """``||W - W0|| / ||W0||`` per group of parameters (float tensors only; BN running stats out)."""
    out = {}
    bn = {k.rsplit(".", 1)[0] for k in start if k.endswith("running_mean")}
    for name, pattern, kind in GROUPS:
        num = den = 0.0
        for k, w0 in start.items():
            if not w0.is_floating_point() or "running" in k or not re.search(pattern, k):
                continue
            if kind is not None and (k.rsplit(".", 1)[0] in bn) != (kind == "bn"):
                continue
            num += float((new[k].double() - w0.double()).pow(2).sum())
            den += float(w0.double().pow(2).sum())
        out[name] = (num / den) ** 0.5 if den > 0 else float("nan")
    return out


@torch.no_grad()
def identity_sot(model, root: Path, split: str) -> dict[str, float]:
    """Track every scored object alone; shares of ok / swap / lost frames and mean scores."""
    model.eval()
    n = np.zeros(3)
    score = np.zeros(3)
    for _, info in gt_sequences(root, split):
        rows = read_gt(info.gt_path, info.seq_length)
        rows = rows.select((rows.cls == 1) & (rows.conf == 1))
        ids = np.unique(rows.id)
        first = {int(i): int(rows.frame[rows.id == i].min()) for i in ids}
        last = {int(i): int(rows.frame[rows.id == i].max()) for i in ids}
        tracker = BatchedSiamRPNTracker(model)
        for f in range(min(first.values()), max(last.values()) + 1):
            img = cv2.imread(str(info.image_path(f)), cv2.IMREAD_COLOR)
            sel = rows.frame == f
            gid = [int(i) for i in rows.id[sel]]
            gxyxy = xywh_to_xyxy(torch.as_tensor(rows.xywh[sel], dtype=torch.float64)) - torch.tensor([1.0, 1, 1, 1])
            gone = [i for i in tracker.ids if last[i] < f]
            if gone:
                tracker.remove(gone)
            if len(tracker):
                res = tracker.track(img)
                iou = box_iou(res.xyxy(), gxyxy)                       # (tracks, GT)
                for k, i in enumerate(res.ids):
                    if i not in gid:
                        continue
                    own = iou[k, gid.index(i)]
                    other = torch.cat([iou[k, :gid.index(i)], iou[k, gid.index(i) + 1:]])
                    kind = 0 if own > 0.5 else (1 if other.numel() and other.max() > 0.5 else 2)
                    n[kind] += 1
                    score[kind] += float(res.best_score[k])
            new = [i for i in gid if first[i] == f]
            if new:
                b = np.stack([rows.xywh[sel][gid.index(i)] for i in new]).astype(np.float64)
                b[:, :2] -= 1.0
                tracker.add(img, b, ids=new)
    tot = max(n.sum(), 1)
    return {"success": n[0] / tot, "swap": n[1] / tot, "lost": n[2] / tot,
            "score ok": score[0] / max(n[0], 1), "score swap": score[1] / max(n[1], 1),
            "score lost": score[2] / max(n[2], 1), "frames": n.sum()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="*", help="fine-tuned SiamRPN weights (state dicts)")
    ap.add_argument("--start", default=str(SYNTHETIC_WEIGHTS), help="starting weights (default: shipped)")
    ap.add_argument("--model", default="siamrpn_alex_tiny")
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--split", default="val")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-start-row", action="store_true", help="do not measure the starting weights themselves")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def load(path):
        m = build_siamrpn(args.model)
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_pysot_checkpoint(m, state.get("model", state))       # a training checkpoint or weights
        return m

    start = load(args.start)
    s0 = {k: v.clone() for k, v in start.state_dict().items()}
    cols = [g[0] for g in GROUPS] + ["success", "swap", "lost", "score ok", "score swap", "score lost"]
    print(f"{'weights':40s} " + " ".join(f"{c:>13s}" for c in cols))
    for path in ([] if args.no_start_row else [args.start]) + list(args.weights):
        if not Path(path).is_file():
            print(f"{path}: missing")
            continue
        m = load(path)
        row = {**weight_change(s0, m.state_dict()), **identity_sot(m, Path(args.data), args.split)}
        cells = [f"{row[c]:13.4f}" if c in dict.fromkeys(g[0] for g in GROUPS) else
                 (f"{100 * row[c]:12.2f}%" if not c.startswith("score") else f"{row[c]:13.3f}") for c in cols]
        print(f"{str(path)[-40:]:40s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
