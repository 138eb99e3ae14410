"""Tracktor as a trainable tracker of the DeepMOT loop (:mod:`deepmot.engine.protocol`).

DeepMOT-Tracktor (Xu et al., CVPR 2020) fine-tunes only the detector's box-regression layer
(``roi_heads.box_predictor.bbox_pred``) and a new appearance head (a Linear on the box head's
representation) with the DeepMOT criterion; the backbone, the RPN, the box head and the
classifier stay frozen and every BatchNorm stays in eval mode. Tracks are born from GT boxes,
jittered (probability 0.4 each: centre shifted by U[0.05, 0.1] of the half size, size scaled by
U[0.8, 1.5]); each step regresses every track's previous box on the new frame through the RoI head
(after ECC camera-motion compensation), differentiably w.r.t. the box-regression layer.

The loop's criterion sees the boxes (geometry: dMOTA / dMOTP) and trains the box-regression layer.
The appearance branch (:mod:`trackers.tracktor.appearance`) is this tracker's auxiliary loss,
weighted by the config's ``w_focal``: with ``w_focal > 0`` the net gets a ``reid_head`` (Linear
``rep_dim() -> 128``, PyTorch's default init drawn from ``seed``; weights that already hold a head
keep theirs), which trains with the loop's own criterion (soft assignment, ``delta``,
temperature) applied to ``0.5 * (1 - cos)`` between each track's mean embedding and each GT box's;
``w_focal=1`` is the paper's weighting (its appearance loss is added as it is). Each training track
keeps a ring of the last ``max_features`` (the inference option, 10) detached box-head
representations: the one of its birth box on the birth frame, then one per frame of its regressed
box (as inference stores them; the reference keeps them only for tracks its geometric mask matches,
here the unmatched ones die at once unless ``train_coast`` keeps them). A refresh (``reinit``)
keeps the ring. The exported ``tracktor_deepmot.pth`` holds the head, which inference's
re-identification then uses (``embedding: box_head``; ``roi_pool`` ignores it). With
``w_focal=0`` no head is added and a head already in the weights stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from deepmot.config import load_config
from deepmot.engine.protocol import SequenceFactory, StepOutput, TrainContext
from trackers.tracktor.appearance import appearance_loss, mean_embedding, new_head, own_pairs
from trackers.tracktor.cmc import ecc_warp, warp_boxes
from trackers.tracktor.config import TracktorConfig
from trackers.tracktor.model import FrameFeatures, TracktorNet, load_tracktor_net
from trackers.tracktor.tracker import tracktor_factory

__all__ = ["jitter_boxes", "TracktorTrainTracks", "TracktorTrainable", "build_trainable", "check_trainable",
           "appearance_on", "starting_net", "SHIPPED_DETECTOR", "TRAINED", "TRAINED_APPEARANCE", "REID_DIM"]

SHIPPED_DETECTOR = Path(__file__).resolve().parents[1] / "detection" / "weights" / "detector_tiny_synthetic.pth"
#: the parameters always trained here (names inside :class:`TracktorNet`): the box-regression layer
TRAINED = ("detector.roi_heads.box_predictor.bbox_pred.weight", "detector.roi_heads.box_predictor.bbox_pred.bias")
#: trained too when the appearance branch is on (``w_focal > 0``)
TRAINED_APPEARANCE = ("reid_head.weight", "reid_head.bias")
#: output size of a new appearance head (DeepMOT-Tracktor's ``reid_branch``)
REID_DIM = 128
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


@dataclass
class _Step:
    """The tracker's own part of a :class:`StepOutput`: the regressed ``boxes`` (detached, CPU),
    the frame's ``gray`` image; with the appearance branch on, also the frame (``image``, its
    features ``ff``) for the GT representations and the track's next stored representation."""

    boxes: Tensor
    gray: np.ndarray
    image: np.ndarray | None = None
    ff: FrameFeatures | None = None


class TracktorTrainTracks:
    """The tracks of one training clip: ids and boxes (0-based xyxy), regressed by the shared net.

    ``max_features > 0`` (the appearance branch): each track also keeps a ring ``bank (N, K, R)``
    of its last ``K = max_features`` detached box-head representations (``nfeat (N,)``: how many
    were written), and :meth:`step` puts their mean through the net's ``reid_head`` into
    ``StepOutput.aux_input``.
    """

    def __init__(self, net: TracktorNet, cmc: bool, embedding: str, max_features: int = 0):
        self.net, self.cmc, self.embedding = net, cmc, embedding
        self._ids: list[int] = []
        self.pos = torch.zeros(0, 4)
        self.prev_gray: np.ndarray | None = None
        self.next_id = 1
        self.max_features = int(max_features)
        if self.max_features and net.reid_head is None:
            raise ValueError("an appearance memory (max_features > 0) needs a net with a reid_head")
        self.bank = torch.zeros(0, max(self.max_features, 1), net.rep_dim(), device=net.device)
        self.nfeat = torch.zeros(0, dtype=torch.long, device=net.device)
        self._frame: tuple[np.ndarray, FrameFeatures] | None = None   # the last step's frame, for births on it

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
        pos = jitter_boxes(boxes.cpu(), gen).float()
        self.pos = torch.cat([self.pos, pos])
        self.prev_gray = _gray(image)
        if self.max_features:
            with torch.no_grad():
                rep = self.net.regress(self._features(image), pos + _ORIGIN).rep
            bank = rep.new_zeros(len(new), *self.bank.shape[1:])
            bank[:, 0] = rep
            self.bank = torch.cat([self.bank, bank])
            self.nfeat = torch.cat([self.nfeat, torch.ones(len(new), dtype=torch.long, device=self.nfeat.device)])
        return new

    def _features(self, image: np.ndarray) -> FrameFeatures:
        """The frozen backbone's features of ``image``: the last step's when it was on this very frame."""
        if self._frame is not None and self._frame[0] is image:
            return self._frame[1]
        with torch.no_grad():
            return self.net.frame(image)

    def reinit(self, image: np.ndarray, ids: Sequence[int], boxes: Tensor, gen: torch.Generator) -> None:
        """Put tracks ``ids`` back on (jittered) ``boxes (K, 4)``."""
        rows = torch.tensor([self._ids.index(int(i)) for i in ids], dtype=torch.long)
        self.pos[rows] = jitter_boxes(boxes.cpu(), gen).float()

    def remove(self, ids: Sequence[int]) -> None:
        """End tracks ``ids``."""
        gone = {int(i) for i in ids}
        keep = [r for r, i in enumerate(self._ids) if i not in gone]
        self._ids = [self._ids[r] for r in keep]
        rows = torch.tensor(keep, dtype=torch.long)
        self.pos = self.pos[rows]
        if self.max_features:
            self.bank, self.nfeat = self.bank[rows.to(self.bank.device)], self.nfeat[rows.to(self.nfeat.device)]

    def step(self, image: np.ndarray, gen: torch.Generator) -> StepOutput:
        """Regress every track's box on ``image`` (differentiable w.r.t. the box-regression layer);
        with the appearance memory, ``aux_input (N, D)`` is each track's mean stored embedding
        (differentiable w.r.t. ``reid_head``). The state is unchanged."""
        net = self.net
        with torch.no_grad():
            ff = net.frame(image)
        pos = self.pos
        if self.cmc and self.prev_gray is not None and len(pos):
            pos = warp_boxes(pos, ecc_warp(self.prev_gray, ff.gray))
        out = net.regress(ff, pos + _ORIGIN)
        boxes = out.boxes - _ORIGIN
        emb = net.embed(out, self.embedding)
        state = _Step(boxes.detach().cpu(), ff.gray)
        aux = None
        if self.max_features:
            aux = mean_embedding(net.reid_head, self.bank, self.nfeat.clamp(max=self.max_features))
            state.image, state.ff = image, ff
        return StepOutput(ids=self.ids, boxes=boxes, embeddings=emb, aux_input=aux, state=state)

    def advance(self, out: StepOutput) -> None:
        """Keep the step's boxes (detached) and frame; with the appearance memory, append each
        track's representation of its new box on this frame to its ring."""
        st: _Step = out.state
        self.pos, self.prev_gray = st.boxes.float(), st.gray
        if self.max_features:
            self._frame = (st.image, st.ff)
            if len(self.pos):
                with torch.no_grad():
                    rep = self.net.regress(st.ff, self.pos + _ORIGIN).rep
                rows = torch.arange(len(rep), device=self.bank.device)
                self.bank[rows, self.nfeat % self.max_features] = rep.to(self.bank)
                self.nfeat = self.nfeat + 1


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def appearance_on(cfg: Any) -> bool:
    """Whether a ``DeepMOTTrainConfig`` trains the appearance branch: ``w_focal > 0`` (its weight)."""
    return cfg.w_focal > 0


class TracktorTrainable:
    """A :class:`TracktorNet` being fine-tuned with DeepMOT, as the loop sees it.

    ``trained``: the parameter names that train (:data:`TRAINED`, plus :data:`TRAINED_APPEARANCE`
    when the appearance branch is on: ``cfg.w_focal > 0`` and the net has a ``reid_head``).
    """

    weights_name = "tracktor_deepmot.pth"

    def __init__(self, net: TracktorNet, cfg: Any, inference: TracktorConfig | None = None):
        self.module, self.cfg = net, cfg
        self.inference = inference or TracktorConfig()
        self.appearance = appearance_on(cfg) and net.reid_head is not None
        self.aux_name = "appearance" if self.appearance else "none"
        self.trained = TRAINED + (TRAINED_APPEARANCE if self.appearance else ())
        self.criterion: Any = None            # the loop's DeepMOTLoss (set_criterion)
        self.frozen = []
        for name, p in net.named_parameters():
            p.requires_grad_(name in self.trained)
            if name not in self.trained:
                self.frozen.append(name)
        # the head as it starts (for the shipped row: the shipped detector has none)
        self._start_head = {k: v.detach().clone() for k, v in net.state_dict().items() if k.startswith("reid_head.")}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The box-regression layer's weight and bias (and the appearance head's when it trains)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def set_criterion(self, criterion: Any) -> None:
        """The loop's :class:`~deepmot.criterion.DeepMOTLoss`, whose soft assignment, ``delta``
        and temperature the appearance branch uses."""
        self.criterion = criterion

    def new_tracks(self) -> TracktorTrainTracks:
        """An empty track set for a new clip (with an appearance memory when the branch is on)."""
        return TracktorTrainTracks(self.module, self.inference.cmc, self.inference.embedding,
                                   self.inference.max_features if self.appearance else 0)

    def aux_loss(self, out: StepOutput, target: Tensor, present: Tensor, gt_boxes: Tensor) -> Tensor | None:
        """The appearance branch's loss (:func:`~trackers.tracktor.appearance.appearance_loss`,
        0-d, attached to ``reid_head``) when it is on, else None. The GT representations are
        pooled from the step's frame features (detached); each row's own GT column is the GT box
        equal to its ``target`` where ``present``."""
        if not self.appearance:
            return None
        if self.criterion is None:
            raise RuntimeError("the appearance branch needs the loop's criterion (set_criterion was not called)")
        st: _Step = out.state
        net = self.module
        with torch.no_grad():
            gt_rep = net.regress(st.ff, gt_boxes + _ORIGIN).rep
        own = own_pairs(target, present, gt_boxes)
        c = self.criterion
        return appearance_loss(out.aux_input, net.reid_head(gt_rep), own, c.assign, c.delta, c.temperature)

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
        own.update(self._start_head)
        return {**state, **{k: v.to(state[k]) for k, v in own.items()}}, str(SHIPPED_DETECTOR)


def starting_net(cfg: Any, device: torch.device | str = "cpu") -> TracktorNet:
    """``cfg.pretrained`` (detector or Tracktor weights; None: the shipped detector). With the
    appearance branch on (:func:`appearance_on`) and weights without a head, a new ``reid_head``
    (``REID_DIM`` outputs, default init drawn from ``cfg.seed``); weights holding one keep theirs.
    Off, no head is added (an untrained one would only blur the box head's representation that
    re-identification uses)."""
    net = load_tracktor_net(cfg.pretrained or SHIPPED_DETECTOR)
    if appearance_on(cfg) and net.reid_head is None:
        net.reid_head = new_head(net.rep_dim(), REID_DIM, cfg.seed)
    return net.to(device)


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
