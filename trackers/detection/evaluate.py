"""Detection evaluation with COCO's evaluator (pycocotools) and MOTChallenge private detections.

:func:`coco_metrics` scores detections against pedestrian GT: AP (IoU 0.50:0.95), AP50, AP75,
recall (AR at ``max_dets``), and, at an operating score threshold, precision and recall at IoU 0.5
counted from pycocotools' own matches. Ignore regions enter as COCO "crowd" boxes: a detection
matched to one (intersection over the detection's area >= IoU threshold) is neither a true nor a
false positive. ``vis_buckets`` adds AP50 per GT visibility bucket (GT outside the bucket are
ignored, so detections on them are not false positives).

:func:`detect_frames` runs a detector over a :class:`~trackers.detection.data.FrameSet`;
:func:`write_private_detections` writes them as ``<out>/<split>/<sequence>/det/det.txt`` in a
MOTChallenge tree (``seqinfo.ini`` named after the base sequence, images and GT linked) that
``evaluate.py --data <out>`` tracks on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from deepmot.datasets.layout import write_seqinfo
from deepmot.datasets.mot import write_detections
from trackers.detection.data import FrameSet

__all__ = ["coco_metrics", "detect_frames", "write_private_detections", "VIS_BUCKETS"]

VIS_BUCKETS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))


def _xywh(b: np.ndarray) -> list[list[float]]:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()


def _coco(gts: list[dict], dets: list[dict], vis_range: tuple[float, float] | None):
    """pycocotools COCO objects; ``vis_range``: keep GT with visibility in it (others ignored via area)."""
    from pycocotools.coco import COCO

    images, anns, results = [], [], []
    for img_id, (g, d) in enumerate(zip(gts, dets), start=1):
        images.append({"id": img_id})
        vis = g.get("vis", torch.ones(len(g["boxes"]))).numpy()
        for box, v in zip(_xywh(g["boxes"]), vis):
            # with a visibility bucket the "area" carries the visibility, so that COCO's area range
            # selects the bucket; otherwise the true area (the range is then everything)
            area = float(v) if vis_range else box[2] * box[3]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "bbox": box, "area": area,
                         "iscrowd": 0})
        for box in _xywh(g["ignore"]):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "bbox": box,
                         "area": float(np.mean(vis_range)) if vis_range else box[2] * box[3], "iscrowd": 1})
        for box, s in zip(_xywh(d["boxes"]), np.asarray(d["scores"], np.float64).reshape(-1)):
            area = float(np.mean(vis_range)) if vis_range else box[2] * box[3]
            results.append({"image_id": img_id, "category_id": 1, "bbox": box, "score": float(s), "area": area})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "pedestrian"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
    if results and vis_range:  # loadRes recomputes areas from the boxes: put the bucket's value back
        for a in dt.dataset["annotations"]:
            a["area"] = float(np.mean(vis_range))
    if not results:
        dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
    return gt, dt, results


def _run(gt, dt, max_dets: int, area_rng: tuple[float, float] | None):
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = [1, 10, max_dets]
    if area_rng is not None:
        ev.params.areaRng = [list(area_rng)]
        ev.params.areaRngLbl = ["bucket"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(ev, iou: float | None) -> float:
    """Mean interpolated precision (COCO's AP) at IoU ``iou`` (None: averaged over 0.50:0.95), area 0, maxDets -1."""
    p = ev.eval["precision"]  # (T, R, K, A, M)
    if iou is not None:
        p = p[np.isclose(ev.params.iouThrs, iou)]
    p = p[:, :, 0, 0, -1]
    p = p[p > -1]
    return float(p.mean()) if p.size else float("nan")  # no GT: undefined


def coco_metrics(gts: list[dict], dets: list[dict], *, score_thresh: float = 0.5, max_dets: int = 100,
                 vis_buckets: bool = False) -> dict[str, float]:
    """COCO metrics of ``dets`` against ``gts`` (one entry per image, same order).

    ``gts[i]``: ``{"boxes" (n, 4) xyxy, "ignore" (m, 4) xyxy, "vis" (n,) optional}``; ``dets[i]``:
    ``{"boxes" (k, 4) xyxy, "scores" (k,)}``. Returns ``AP``, ``AP50``, ``AP75``, ``recall`` (AR at
    ``max_dets``, IoU 0.50:0.95), ``recall50`` (max recall at IoU 0.5), and at ``score_thresh``:
    ``precision@thr``, ``recall@thr`` (IoU 0.5) and ``num_gt``; with ``vis_buckets`` also
    ``AP50_vis<lo>-<hi>`` and their GT counts. Values in [0, 1].
    """
    gt, dt, results = _coco(gts, dets, None)
    ev = _run(gt, dt, max_dets, None)
    num_gt = int(sum(len(g["boxes"]) for g in gts))
    recall = ev.eval["recall"][:, 0, 0, -1]  # (T,)
    out = {"AP": _ap(ev, None), "AP50": _ap(ev, 0.5), "AP75": _ap(ev, 0.75),
           "recall": float(recall[recall > -1].mean()) if (recall > -1).any() else 0.0,
           "recall50": float(max(recall[0], 0.0)), "num_gt": float(num_gt)}
    # precision / recall at the operating threshold from pycocotools' matches at IoU 0.5
    tp = fp = 0
    for e in ev.evalImgs:
        if e is None or e["aRng"] != ev.params.areaRng[0]:
            continue
        scores = np.asarray(e["dtScores"])
        keep = (scores >= score_thresh) & ~np.asarray(e["dtIgnore"][0], bool)
        matched = np.asarray(e["dtMatches"][0]) > 0
        tp += int((keep & matched).sum())
        fp += int((keep & ~matched).sum())
    out["precision@thr"] = tp / max(1, tp + fp)
    out["recall@thr"] = tp / max(1, num_gt)
    if vis_buckets:
        for lo, hi in VIS_BUCKETS:
            gtb, dtb, _ = _coco(gts, dets, (lo, hi))
            key = f"vis{lo:.2f}-{min(hi, 1.0):.2f}"
            out[f"AP50_{key}"] = _ap(_run(gtb, dtb, max_dets, (lo, hi)), 0.5)
            out[f"num_gt_{key}"] = float(sum(int(((g["vis"] >= lo) & (g["vis"] < hi)).sum()) for g in gts))
    return out


@torch.no_grad()
def detect_frames(model, frames: FrameSet, progress=None) -> tuple[list[dict], list[dict]]:
    """Run ``model`` (eval mode) on every frame -> ``(dets, gts)`` in frame order:
    ``dets[i] = {"boxes" (k, 4) xyxy, "scores" (k,)}``, ``gts[i]`` the frame's target dict."""
    model.eval()
    dets, gts = [], []
    device = next(model.parameters()).device
    it = range(len(frames)) if progress is None else progress(range(len(frames)), desc="detect")
    for i in it:
        image, target = frames[i]
        pred = model([image.to(device)])[0]
        dets.append({"boxes": pred["boxes"].cpu(), "scores": pred["scores"].cpu()})
        gts.append(target)
    return dets, gts


def write_private_detections(frames: FrameSet, dets: list[dict], out: str | os.PathLike, split: str) -> list[Path]:
    """Write ``dets`` as ``<out>/<split>/<sequence>/det/det.txt`` (``frame,-1,x,y,w,h,score,-1,-1,-1``,
    1-based pixel coordinates as the GT), with a ``seqinfo.ini`` named after the base sequence
    (``MOT17-02``, no detector suffix) and ``img1/``, ``gt/`` linked
    (copied where links are impossible). Returns the det.txt paths."""
    by_seq: dict[str, list[tuple[int, dict]]] = {}
    for (name, index), d in zip(frames.keys, dets):
        by_seq.setdefault(name, []).append((index, d))
    paths = []
    for name, rows in by_seq.items():
        seq = frames.sequences[name]
        src = Path(seq.info.root)
        dst = Path(out) / split / name
        (dst / "det").mkdir(parents=True, exist_ok=True)
        # named by the base sequence: no public-detector suffix, so no DPM/FRCNN/SDP score thresholds apply
        write_seqinfo(dataclasses.replace(seq.info, name=name, root=dst))
        for sub in (seq.info.im_dir, "gt"):
            if (src / sub).exists() and not (dst / sub).exists():
                try:
                    (dst / sub).symlink_to((src / sub).resolve(), target_is_directory=True)
                except OSError:
                    shutil.copytree(src / sub, dst / sub)
        frame = np.concatenate([np.full(len(d["scores"]), i) for i, d in rows]) if rows else np.zeros(0)
        boxes = torch.cat([d["boxes"] for _, d in rows]).reshape(-1, 4).numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        scores = torch.cat([d["scores"] for _, d in rows]).numpy()
        write_detections(dst / "det" / "det.txt", frame.astype(np.int64), xywh, scores)
        paths.append(dst / "det" / "det.txt")
    return paths
