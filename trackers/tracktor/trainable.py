"""Tracktor as a trainable tracker of the DeepMOT loop (:mod:`deepmot.engine.protocol`).

DeepMOT-Tracktor (Xu et al., CVPR 2020) fine-tunes only the detector's box-regression layer
(``roi_heads.box_predictor.bbox_pred``) and a new appearance head (a Linear on the box head's
representation) with the DeepMOT criterion; the backbone, the RPN, the box head and the
classifier stay frozen and every BatchNorm stays in eval mode. Tracks are born from GT boxes,
jittered (probability 0.4 each: centre shifted by U[0.05, 0.1] of the half size, size scaled by
U[0.8, 1.5]); each step regresses every track's previous box on the new frame through the RoI head
(after ECC camera-motion compensation), differentiably w.r.t. the box-regression layer.

The loop's criterion sees the boxes (geometry: dMOTA / dMOTP), so only the box-regression layer
trains. The appearance branch of DeepMOT-Tracktor (the criterion on ``0.5 * (1 - cos)`` between
track and GT embeddings) needs the loop to take appearance distances, which it does not yet: the
step returns the embeddings in :class:`~deepmot.engine.protocol.StepOutput`, and a Tracktor
checkpoint holding a trained ``reid_head`` is used by inference, but no head is trained here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from deepmot.config import load_config
from deepmot.engine.protocol import SequenceFactory, StepOutput, TrainContext
from trackers.tracktor.cmc import ecc_warp, warp_boxes
from trackers.tracktor.config import TracktorConfig
from trackers.tracktor.model import TracktorNet, load_tracktor_net
from trackers.tracktor.tracker import tracktor_factory

__all__ = ["jitter_boxes", "TracktorTrainTracks", "TracktorTrainable", "build_trainable", "check_trainable",
           "SHIPPED_DETECTOR", "TRAINED"]

SHIPPED_DETECTOR = Path(__file__).resolve().parents[1] / "detection" / "weights" / "detector_tiny_synthetic.pth"
#: the parameters trained here (names inside :class:`TracktorNet`; DeepMOT-Tracktor also trains ``reid_head``)
TRAINED = ("detector.roi_heads.box_predictor.bbox_pred.weight", "detector.roi_heads.box_predictor.bbox_pred.bias")
#: MOTChallenge coordinates are the detector's array coordinates; the loop's boxes are 0-based
_ORIGIN = 1.0


def jitter_boxes(boxes: Tensor, gen: torch.Generator, prob: float = 0.4, shift: tuple[float, float] = (0.05, 0.1),
                 scale: tuple[float, float] = (0.8, 1.5)) -> Tensor:
    """Birth augmentation of ``boxes (K, 4)`` xyxy: with probability ``prob`` each, the centre moves
    by U[``shift``] x half the size in a random direction per axis, and the size scales by U[``scale``]."""
    b = boxes.double().clone()
    k = len(b)
    if k == 0:
        return b
    ctr, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    move = (u(k) < prob)[:, None]
    sign = torch.where(u(k, 2) < 0.5, -1.0, 1.0)
    ctr = ctr + move * sign * (shift[0] + (shift[1] - shift[0]) * u(k, 2)) * size / 2
    grow = (u(k) < prob)[:, None]
    size = torch.where(grow, size * (scale[0] + (scale[1] - scale[0]) * u(k, 1)), size)
    return torch.cat([ctr - size / 2, ctr + size / 2], 1)


class TracktorTrainTracks:
    """The tracks of one training clip: ids and boxes (0-based xyxy), regressed by the shared net."""

    def __init__(self, net: TracktorNet, cmc: bool, embedding: str):
        self.net, self.cmc, self.embedding = net, cmc, embedding
        self._ids: list[int] = []
        self.pos = torch.zeros(0, 4)
        self.prev_gray: np.ndarray | None = None
        self.next_id = 1

    @property
    def ids(self) -> list[int]:
        """Live track ids, in row order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, image: np.ndarray, boxes: Tensor, gen: torch.Generator) -> list[int]:
        """New tracks at jittered ``boxes (K, 4)`` (0-based xyxy) in ``image``."""
        new = list(range(self.next_id, self.next_id + len(boxes)))
        self.next_id += len(boxes)
        self._ids += new
        self.pos = torch.cat([self.pos, jitter_boxes(boxes.cpu(), gen).float()])
        self.prev_gray = _gray(image)
        return new

    def reinit(self, image: np.ndarray, ids: Sequence[int], boxes: Tensor, gen: torch.Generator) -> None:
        """Put tracks ``ids`` back on (jittered) ``boxes (K, 4)``."""
        rows = torch.tensor([self._ids.index(int(i)) for i in ids], dtype=torch.long)
        self.pos[rows] = jitter_boxes(boxes.cpu(), gen).float()

    def remove(self, ids: Sequence[int]) -> None:
        """End tracks ``ids``."""
        gone = {int(i) for i in ids}
        keep = [r for r, i in enumerate(self._ids) if i not in gone]
        self._ids = [self._ids[r] for r in keep]
        self.pos = self.pos[torch.tensor(keep, dtype=torch.long)]

    def step(self, image: np.ndarray, gen: torch.Generator) -> StepOutput:
        """Regress every track's box on ``image`` (differentiable w.r.t. the box-regression layer);
        the state is unchanged."""
        net = self.net
        with torch.no_grad():
            ff = net.frame(image)
        pos = self.pos
        if self.cmc and self.prev_gray is not None and len(pos):
            pos = warp_boxes(pos, ecc_warp(self.prev_gray, ff.gray))
        out = net.regress(ff, pos + _ORIGIN)
        boxes = out.boxes - _ORIGIN
        emb = net.embed(out, self.embedding)
        return StepOutput(ids=self.ids, boxes=boxes, embeddings=emb, state=(boxes.detach().cpu(), ff.gray))

    def advance(self, out: StepOutput) -> None:
        """Keep the step's boxes (detached) and frame."""
        self.pos, self.prev_gray = out.state[0].float(), out.state[1]


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class TracktorTrainable:
    """A :class:`TracktorNet` being fine-tuned with DeepMOT, as the loop sees it."""

    weights_name = "tracktor_deepmot.pth"
    aux_name = "none"

    def __init__(self, net: TracktorNet, cfg: Any, inference: TracktorConfig | None = None):
        self.module, self.cfg = net, cfg
        self.inference = inference or TracktorConfig()
        self.frozen = []
        for name, p in net.named_parameters():
            p.requires_grad_(name in TRAINED)
            if name not in TRAINED:
                self.frozen.append(name)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The box-regression layer's weight and bias."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def new_tracks(self) -> TracktorTrainTracks:
        """An empty track set for a new clip."""
        return TracktorTrainTracks(self.module, self.inference.cmc, self.inference.embedding)

    def aux_loss(self, out: StepOutput, target: Tensor, present: Tensor, gt_boxes: Tensor) -> None:
        """Tracktor adds no loss of its own."""
        return None

    def sequence_factory(self, mot: list[str]) -> SequenceFactory:
        """Tracktor over the current weights (``mot``: ``TracktorConfig`` overrides)."""
        return tracktor_factory(self.module, load_config(TracktorConfig, None, mot))

    def shipped_state(self) -> tuple[dict[str, Tensor] | None, str]:
        """The shipped detector in this net's layout (appearance head as it starts) and its path."""
        if not SHIPPED_DETECTOR.is_file():
            return None, f"no shipped detector at {SHIPPED_DETECTOR}"
        try:
            shipped = load_tracktor_net(SHIPPED_DETECTOR)
        except ValueError as e:
            return None, str(e)
        state = self.module.state_dict()
        own = {k: v for k, v in shipped.state_dict().items() if isinstance(v, Tensor)}
        if any(k not in state or state[k].shape != v.shape for k, v in own.items()):
            return None, f"the shipped detector {SHIPPED_DETECTOR.name} does not fit this net"
        return {**state, **{k: v.to(state[k]) for k, v in own.items()}}, str(SHIPPED_DETECTOR)


def starting_net(cfg: Any, device: torch.device | str = "cpu") -> TracktorNet:
    """``cfg.pretrained`` (detector or Tracktor weights; None: the shipped detector). No appearance
    head is added while the loop has no appearance criterion (an untrained head would only blur
    the box head's representation that re-identification uses)."""
    return load_tracktor_net(cfg.pretrained or SHIPPED_DETECTOR).to(device)


def build_trainable(cfg: Any, ctx: TrainContext) -> TracktorTrainable:
    """The ``"tracktor"`` training entry (``cfg``: a ``DeepMOTTrainConfig``; its ``validation.mot``
    holds ``TracktorConfig`` overrides, used for the training tracks' CMC too)."""
    return TracktorTrainable(starting_net(cfg, ctx.device), cfg, load_config(TracktorConfig, None, cfg.validation.mot))


def check_trainable(cfg: Any) -> None:
    """The weights ``cfg.pretrained`` load and ``validation.mot`` are valid Tracktor options; else a
    one-line ``ConfigError``."""
    from deepmot.config import ConfigError
    from deepmot.errors import DataFormatError

    try:
        load_config(TracktorConfig, None, cfg.validation.mot)
    except ConfigError as e:
        raise ConfigError(f"validation.mot: {e}") from None
    try:
        load_tracktor_net(cfg.pretrained or SHIPPED_DETECTOR)
    except (DataFormatError, FileNotFoundError) as e:
        raise ConfigError(f"--pretrained: {str(e).splitlines()[0]}") from None
