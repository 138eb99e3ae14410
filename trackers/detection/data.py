"""Detector training data from MOTChallenge-layout sequences: frames, pedestrian boxes, ignore regions.

Per frame: positives are GT rows of class 1 with flag 1 (and visibility >= ``min_vis``); every
other flag-0 row and every row of a distractor class (2 person on vehicle, 7 static person,
8 distractor, 12 reflection) is an *ignore region*: predictions inside it are neither positives
nor negatives (training) nor true or false positives (evaluation). Rows of other classes
(vehicles, occluders) are background. The MOT17 detector variants of a sequence share one GT, so
each base sequence is used once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from deepmot.datasets import Sequence
from deepmot.datasets.layout import gt_sequences

__all__ = ["DataConfig", "DISTRACTOR_CLASSES", "FrameSet", "frame_targets", "to_tensor", "flip"]

#: MOT17 classes whose boxes are ignore regions (the protocol's distractors).
DISTRACTOR_CLASSES = (2, 7, 8, 12)


@dataclass
class DataConfig:
    """Which frames train and validate, and the augmentation.

    ``split``: the folder holding the training sequences; ``train_range`` / ``val_range``: frame
    ranges of each of its sequences ("train-half" / "val-half": ByteTrack's MOT17 half split;
    "full"); ``test_split``: folder scored once at the end. ``val_every``: every k-th validation
    frame enters the periodic AP. ``min_vis``: positives below this visibility become ignore
    regions. ``flip``: horizontal-flip probability. ``scales``: the shorter image side is drawn
    from ``min_size * scales`` per batch (torchvision's multi-scale training).
    """

    split: str = "train"
    train_range: str = "train-half"
    val_range: str = "val-half"
    test_split: str = "test"
    val_every: int = 5
    min_vis: float = 0.0
    flip: float = 0.5
    scales: list[float] = field(default_factory=lambda: [0.8, 0.9, 1.0, 1.1, 1.2])

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"data.flip must be a probability, got {self.flip}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("data.scales must be a non-empty list of positive factors")
        if self.val_every < 1:
            raise ValueError("data.val_every must be >= 1")


def frame_targets(frame, width: int, height: int, min_vis: float = 0.0) -> dict[str, Tensor]:
    """``{"boxes" (n, 4), "labels" (n,), "ignore" (m, 4), "vis" (n,)}`` of one
    :class:`~deepmot.datasets.sequence.Frame`; boxes xyxy pixels clipped to the image, empty ones dropped."""
    boxes = frame.gt_boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    pos = ok & frame.scored_gt_mask(min_vis)
    ign = ok & ~pos & ((frame.gt_flag == 0) | torch.isin(frame.gt_cls, torch.tensor(DISTRACTOR_CLASSES))
                       | ((frame.gt_cls == 1) & (frame.gt_vis < min_vis)))
    return {"boxes": boxes[pos], "labels": torch.ones(int(pos.sum()), dtype=torch.int64), "ignore": boxes[ign],
            "vis": frame.gt_vis[pos]}


def to_tensor(image_bgr: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 BGR -> (3, H, W) float RGB in [0, 1] (the detector's input)."""
    return torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)


def flip(image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Horizontal flip of a (3, H, W) image and its xyxy boxes (``boxes`` and ``ignore``)."""
    w = image.shape[-1]
    out = dict(target)
    for key in ("boxes", "ignore"):
        b = target[key]
        out[key] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1) if len(b) else b
    return image.flip(-1), out


class FrameSet:
    """The frames of ``root/split``'s GT sequences in ``frame_range`` (every ``every``-th frame).

    ``len(fs)`` frames; ``fs[i]`` -> ``(image (3, H, W) float RGB, target dict)`` (see
    :func:`frame_targets`); ``fs.keys[i]`` = ``(sequence name, frame number)``. Errors in the data
    (missing images, malformed GT) surface as the dataset layer's one-line errors.
    """

    def __init__(self, root, split: str, frame_range: str | None = None, every: int = 1, min_vis: float = 0.0):
        self.sequences = {}
        self.keys: list[tuple[str, int]] = []
        for base, info in gt_sequences(root, split):
            seq = Sequence(info, detections=None, frame_range=frame_range)
            self.sequences[base] = seq
            self.keys += [(base, f) for f in list(seq.frames)[::every]]
        self.min_vis = min_vis

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        name, index = self.keys[i]
        seq = self.sequences[name]
        frame = seq.frame(index)
        w, h = seq.info.image_size
        return to_tensor(frame.image), frame_targets(frame, w, h, self.min_vis)
