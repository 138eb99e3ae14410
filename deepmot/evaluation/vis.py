"""Tracking videos: one MP4 per sequence with the tracker's boxes and its CLEAR-MOT errors.

Every result box is drawn in a colour fixed by its id (the same id has the same colour in every
frame and video) with the id written on it. When the sequence has GT, the official MOT17
matching (:func:`deepmot.evaluation.match_trackeval` after :func:`~deepmot.evaluation.preprocess`)
marks the errors: false positives (red cross over the box, ``FP``), misses (the GT box dashed
white, ``FN``) and identity switches (yellow ring at the GT box centre, ``IDSW``). Result boxes
removed as distractor matches are drawn thin grey. Written with OpenCV's ``mp4v`` codec,
atomically (temporary file, then rename).
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import cv2
import numpy as np

from deepmot.datasets.mot import MOTRows, read_results
from deepmot.datasets.sequence import Sequence
from deepmot.evaluation.accumulate import match_trackeval
from deepmot.evaluation.protocol import preprocess

__all__ = ["id_color", "frame_errors", "write_tracking_video"]

_RED, _WHITE, _YELLOW, _GREY = (0, 0, 255), (255, 255, 255), (0, 255, 255), (150, 150, 150)


def id_color(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for ``track_id`` (golden-ratio hue steps)."""
    h = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(255 * b), int(255 * g), int(255 * r)


def frame_errors(gt: MOTRows, res: MOTRows, num_frames: int, protocol: str = "mot17") -> list[dict]:
    """Per frame ``t = frame - 1``: ``{"fp": (K, 4) xywh, "fn": (G, 4) xywh, "idsw": (S, 4) xywh,
    "kept": set of result ids kept after distractor removal}`` under the official matching
    (``IDSW``: a GT object matched to a different result id than at its last match)."""
    seq = preprocess("vis", gt, res, num_frames, protocol)
    prev = np.full(seq.num_gt_ids, -1, np.int64)
    out = []
    for t, (rows, cols) in enumerate(match_trackeval(seq)):
        g, k = seq.gt_ids[t], seq.tracker_ids[t]
        fp = np.ones(len(k), bool)
        fp[cols] = False
        fn = np.ones(len(g), bool)
        fn[rows] = False
        sw = np.zeros(len(g), bool)
        for r, c in zip(rows, cols):
            if prev[g[r]] != -1 and prev[g[r]] != k[c]:
                sw[r] = True
            prev[g[r]] = k[c]
        out.append({"fp": seq.tracker_boxes[t][fp], "fn": seq.gt_boxes[t][fn], "idsw": seq.gt_boxes[t][sw],
                    "kept": set(seq.tracker_id_values[k].tolist())})
    return out


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)) - 1, int(round(y)) - 1  # MOTChallenge boxes are 1-based


def _dashed_rect(img: np.ndarray, box: np.ndarray, color, dash: int = 6) -> None:
    x, y, w, h = box
    (x1, y1), (x2, y2) = _pt(x, y), _pt(x + w, y + h)
    for a in range(x1, x2, 2 * dash):
        cv2.line(img, (a, y1), (min(a + dash, x2), y1), color, 1)
        cv2.line(img, (a, y2), (min(a + dash, x2), y2), color, 1)
    for a in range(y1, y2, 2 * dash):
        cv2.line(img, (x1, a), (x1, min(a + dash, y2)), color, 1)
        cv2.line(img, (x2, a), (x2, min(a + dash, y2)), color, 1)


def _label(img: np.ndarray, text: str, org: tuple[int, int], color) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


def _draw(img: np.ndarray, res: MOTRows, idx: np.ndarray, errors: dict | None, frame: int) -> np.ndarray:
    img = img.copy()
    for i in idx:
        x, y, w, h = res.xywh[i]
        tid = int(res.id[i])
        kept = errors is None or tid in errors["kept"]
        color = id_color(tid) if kept else _GREY
        cv2.rectangle(img, _pt(x, y), _pt(x + w, y + h), color, 2 if kept else 1)
        if kept:
            _label(img, str(tid), (_pt(x, y)[0] + 2, _pt(x, y)[1] + 14), color)
    counts = ""
    if errors is not None:
        for x, y, w, h in errors["fp"]:
            cv2.line(img, _pt(x, y), _pt(x + w, y + h), _RED, 2)
            cv2.line(img, _pt(x + w, y), _pt(x, y + h), _RED, 2)
            _label(img, "FP", (_pt(x, y)[0] + 2, _pt(x, y + h)[1] - 4), _RED)
        for box in errors["fn"]:
            _dashed_rect(img, box, _WHITE)
            _label(img, "FN", (_pt(box[0], box[1])[0] + 2, _pt(box[0], box[1] + box[3])[1] - 4), _WHITE)
        for x, y, w, h in errors["idsw"]:
            c = _pt(x + w / 2, y + h / 2)
            cv2.circle(img, c, int(max(6, min(w, h) / 3)), _YELLOW, 2)
            _label(img, "IDSW", (c[0] - 16, c[1] - 8), _YELLOW)
        counts = f"  FP {len(errors['fp'])}  FN {len(errors['fn'])}  IDSW {len(errors['idsw'])}"
    _label(img, f"frame {frame}{counts}", (8, 20), _WHITE)
    return img


def write_tracking_video(seq: Sequence, results_path: str | os.PathLike, out_path: str | os.PathLike,
                         protocol: str = "mot17", fps: float | None = None) -> Path:
    """Render the result file ``results_path`` over the frames of ``seq`` (its frame range) into the
    MP4 ``out_path``; with GT, FP/FN/IDSW markers as described in the module docstring. ``fps``
    defaults to the sequence's frame rate. Returns the written path."""
    info = seq.info
    res = read_results(results_path, info.seq_length)
    index = res.frames_index()
    errors = None
    if seq.gt_rows is not None:
        keep = (res.frame >= seq.start) & (res.frame <= seq.end)
        sub = res.select(keep)
        sub.frame = sub.frame - (seq.start - 1)
        gkeep = (seq.gt_rows.frame >= seq.start) & (seq.gt_rows.frame <= seq.end)
        gt = seq.gt_rows.select(gkeep)
        gt.frame = gt.frame - (seq.start - 1)
        errors = frame_errors(gt, sub, len(seq), protocol)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{os.getpid()}.mp4")
    size = (info.im_width, info.im_height)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or info.frame_rate), size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an mp4v video to {tmp}")
    try:
        for t, frame in enumerate(seq.frames):
            img = seq.read_image(frame)
            idx = index.get(frame, np.zeros(0, np.int64))
            writer.write(_draw(img, res, idx, None if errors is None else errors[t], frame))
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, out_path)
    return out_path
