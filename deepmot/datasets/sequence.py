"""A MOTChallenge sequence as a lazy list of frames: image (BGR uint8), GT and detections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch import Tensor

from deepmot.datasets.mot import (
    MOTRows,
    SeqInfo,
    half_frame_range,
    read_detections,
    read_gt,
    read_seqinfo,
)
from deepmot.errors import DataFormatError, MissingDataError

__all__ = ["Frame", "Sequence", "resolve_frame_range"]


@dataclass
class Frame:
    """One frame of a sequence.

    ``index``: 1-based frame number. ``image``: ``(H, W, 3)`` uint8 BGR, or None when the sequence
    was opened with ``load_images=False``. GT (``K`` rows, all classes and flags as in gt.txt):
    ``gt_ids (K,) int64``, ``gt_boxes (K, 4) float32`` xyxy pixels (``x2 = x + w``, the file's
    1-based origin), ``gt_cls (K,) int64``, ``gt_flag (K,) int64`` (1 = scored), ``gt_vis (K,)
    float32`` in [0, 1]. Detections (``D`` rows): ``det_boxes (D, 4) float32`` xyxy,
    ``det_scores (D,) float32``.
    """

    index: int
    image: np.ndarray | None
    gt_ids: Tensor
    gt_boxes: Tensor
    gt_cls: Tensor
    gt_flag: Tensor
    gt_vis: Tensor
    det_boxes: Tensor
    det_scores: Tensor

    def scored_gt_mask(self, min_vis: float = 0.0) -> Tensor:
        """``(K,)`` bool: pedestrians that the MOT17 protocol scores (class 1, flag 1) and whose
        visibility is at least ``min_vis`` (a training-time filter; evaluation uses 0)."""
        return (self.gt_cls == 1) & (self.gt_flag == 1) & (self.gt_vis >= min_vis)


def resolve_frame_range(frame_range, seq_length: int) -> tuple[int, int]:
    """Inclusive 1-based ``(start, end)`` of ``frame_range``: None (whole sequence), a pair, or
    ``"train-half"`` / ``"val-half"`` / ``"full"`` (:func:`~deepmot.datasets.mot.half_frame_range`)."""
    if frame_range is None:
        return (1, seq_length)
    if isinstance(frame_range, str):
        return half_frame_range(seq_length, frame_range)
    start, end = (int(v) for v in frame_range)
    if not 1 <= start <= end <= seq_length:
        raise ValueError(f"frame_range {frame_range} must satisfy 1 <= start <= end <= {seq_length}")
    return (start, end)


class Sequence:
    """Frames of one MOTChallenge sequence, decoded lazily.

    ``seq``: a sequence folder or a :class:`SeqInfo`. ``detections``: path of the detection file
    relative to the sequence folder (or absolute), or None for no detections. ``gt``: same for
    the GT file; a missing GT file (test sequences) gives empty GT. ``frame_range``: inclusive
    1-based ``(start, end)``, or ``"train-half"``/``"val-half"``/``"full"``
    (:func:`~deepmot.datasets.mot.half_frame_range`). ``min_det_score``: drop detections scoring
    below it. ``load_images=False`` gives frames with ``image=None`` (no decoding).

    ``len(seq)`` frames; ``seq[i]`` (0-based position in the range) is a :class:`Frame`.
    Raises MissingDataError when ``seqinfo.ini``, the image folder, an image or an explicitly
    requested detection file is missing; DataFormatError when an image's size differs from
    ``seqinfo.ini`` or a text file is malformed.
    """

    def __init__(
        self,
        seq: str | Path | SeqInfo,
        detections: str | Path | None = "det/det.txt",
        frame_range: tuple[int, int] | str | None = None,
        min_det_score: float | None = None,
        load_images: bool = True,
        gt: str | Path | None = "gt/gt.txt",
    ) -> None:
        self.info = seq if isinstance(seq, SeqInfo) else read_seqinfo(seq)
        self.load_images = load_images
        self.start, self.end = resolve_frame_range(frame_range, self.info.seq_length)
        root = Path(self.info.root)
        if load_images and not (root / self.info.im_dir).is_dir():
            raise MissingDataError(f"image folder '{self.info.im_dir}' is missing", root / self.info.im_dir)
        n = self.info.seq_length
        self.gt_rows: MOTRows | None = None
        if gt is not None and (root / gt).is_file():
            self.gt_rows = read_gt(root / gt, n)
        self.det_rows: MOTRows | None = None
        if detections is not None:
            det_path = root / detections
            if not det_path.is_file():
                raise MissingDataError("detection file is missing", det_path)
            rows = read_detections(det_path, n)
            if min_det_score is not None:
                rows = rows.select(rows.conf >= min_det_score)
            self.det_rows = rows
        self._gt_index = self.gt_rows.frames_index() if self.gt_rows is not None else {}
        self._det_index = self.det_rows.frames_index() if self.det_rows is not None else {}
        self._gt_xyxy = self.gt_rows.xyxy() if self.gt_rows is not None else None
        self._det_xyxy = self.det_rows.xyxy() if self.det_rows is not None else None

    @property
    def name(self) -> str:
        """Sequence name from seqinfo.ini (e.g. ``MOT17-02-FRCNN``)."""
        return self.info.name

    @property
    def frames(self) -> range:
        """1-based frame numbers covered, in order."""
        return range(self.start, self.end + 1)

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame position {i} out of range for {n} frames")
        return self.frame(self.start + (i % n))

    def frame(self, index: int) -> Frame:
        """The :class:`Frame` with 1-based frame number ``index`` (must lie in the range)."""
        if not self.start <= index <= self.end:
            raise IndexError(f"frame {index} outside {self.start}..{self.end}")
        image = self.read_image(index) if self.load_images else None
        gi = self._gt_index.get(index, np.zeros(0, np.int64))
        di = self._det_index.get(index, np.zeros(0, np.int64))
        g, d = self.gt_rows, self.det_rows
        if g is not None:
            gt = (g.id[gi], self._gt_xyxy[gi], g.cls[gi], g.conf[gi], g.vis[gi])
        else:
            gt = (np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        if d is not None:
            det = (self._det_xyxy[di], d.conf[di])
        else:
            det = (np.zeros((0, 4)), np.zeros(0))
        return Frame(
            index=index,
            image=image,
            gt_ids=torch.as_tensor(gt[0], dtype=torch.int64),
            gt_boxes=torch.as_tensor(gt[1], dtype=torch.float32).reshape(-1, 4),
            gt_cls=torch.as_tensor(gt[2], dtype=torch.int64),
            gt_flag=torch.as_tensor(gt[3], dtype=torch.int64),
            gt_vis=torch.as_tensor(gt[4], dtype=torch.float32),
            det_boxes=torch.as_tensor(det[0], dtype=torch.float32).reshape(-1, 4),
            det_scores=torch.as_tensor(det[1], dtype=torch.float32),
        )

    def read_image(self, index: int) -> np.ndarray:
        """Decode the image of 1-based frame ``index``: ``(H, W, 3)`` uint8 BGR (OpenCV)."""
        path = self.info.image_path(index)
        if not path.is_file():
            raise MissingDataError(f"image of frame {index} is missing", path)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataFormatError("cannot decode image", path, field="image")
        h, w = image.shape[:2]
        if (w, h) != (self.info.im_width, self.info.im_height):
            raise DataFormatError(
                f"image is {w}x{h}, seqinfo.ini says {self.info.im_width}x{self.info.im_height}",
                path,
                field="image size",
            )
        return image
