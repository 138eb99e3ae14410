"""SiamRPN as a trainable tracker of the DeepMOT loop (:mod:`deepmot.engine.protocol`).

:func:`build_trainable` makes the network to fine-tune: ``cfg.pretrained`` weights, or SOT
pre-training on the training data first (once per run directory; rank 0 trains, the others wait
and load). The first ``frozen_convs`` backbone convolutions stay frozen, and with ``train_params``
(a regular expression) only the parameters whose name matches train. Each training step is
the differentiable batched SiamRPN step (:mod:`trackers.siamrpn.train_step`) on augmented search
crops; new and refreshed templates get box-scale and photometric augmentation
(:mod:`trackers.siamrpn.augment`); the auxiliary loss is DeepMOT's anchor focal loss
(:func:`anchor_focal_loss`, weighted by ``w_focal``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from deepmot.boxes import box_iou, xyxy_to_xywh
from deepmot.config import load_config
from deepmot.engine.protocol import SequenceFactory, StepOutput, TrainContext
from deepmot.losses.focal import sigmoid_focal_loss
from trackers.siamrpn.augment import augment_crops, jitter_box_scale
from trackers.siamrpn.checkpoint import load_pysot_checkpoint
from trackers.siamrpn.model import build_siamrpn
from trackers.siamrpn.tracker import BatchedSiamRPNTracker
from trackers.siamrpn.train_step import commit, train_step

__all__ = ["freeze_early_convs", "anchor_focal_loss", "SiamRPNTrainTracks", "SiamRPNTrainable",
           "starting_model", "build_trainable"]


def freeze_early_convs(model: nn.Module, count: int) -> list[str]:
    """Freeze the first ``count`` ``Conv2d`` layers of ``model.backbone`` (weights and biases;
    BN affine parameters stay trainable, as DeepMOT v1). Returns the frozen parameter names."""
    frozen = []
    convs = [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, nn.Conv2d)]
    for name, m in convs[:max(count, 0)]:
        for pname, p in m.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"backbone.{name}.{pname}")
    return frozen


def anchor_focal_loss(cls_logits: Tensor, anchors_xyxy: Tensor, target_xyxy: Tensor, present: Tensor,
                      pos_iou: float = 0.6, neg_iou: float = 0.3, gamma: float = 2.0,
                      others_xyxy: Tensor | None = None, distractor: float = 0.0) -> Tensor:
    """DeepMOT's anchor classification loss (§6.5), averaged over tracks.

    ``cls_logits (N, K, 2)`` (background, foreground) logits; ``anchors_xyxy (N, K, 4)`` each
    track's anchors in image pixels; ``target_xyxy (N, 4)`` the box of the GT object each track
    follows and ``present (N,)`` bool whether it is in the frame (if not, every anchor is
    negative). Anchors with IoU > ``pos_iou`` are positive, < ``neg_iou`` negative, others
    ignored. Class-balanced focal loss on the 2-way softmax (= sigmoid of the logit difference):
    positives weigh ``1 - n_pos/n``, negatives ``n_pos/n`` (1 when there is no positive); mean
    over the K anchors of a track, then over tracks.

    Distractor-aware negatives (DaSiamRPN, Zhu et al. ECCV 2018, §3.2, as a loss weight): with
    ``distractor > 0`` and ``others_xyxy (M, 4)`` the frame's GT boxes, a negative anchor whose
    IoU with some GT box exceeds ``pos_iou`` (it sits on another object) weighs ``distractor``
    instead of ``n_pos/n`` (a positive weighs about 1), so firing on a neighbour costs about as
    much as missing the target. ``distractor = 0`` is the reference loss. Returns a 0-d tensor.
    """
    n, k, _ = cls_logits.shape
    if n == 0:
        return cls_logits.sum() * 0.0
    flat = anchors_xyxy.reshape(n * k, 4).to(target_xyxy)
    iou = box_iou(flat, target_xyxy).reshape(n, k, n)
    iou = iou.diagonal(dim1=0, dim2=2).transpose(0, 1)                 # (N, K): own target
    iou = torch.where(present[:, None], iou, torch.zeros_like(iou))
    pos = iou > pos_iou
    neg = iou < neg_iou
    n_pos = pos.sum(dim=1, keepdim=True).to(cls_logits.dtype)
    n_lab = (pos | neg).sum(dim=1, keepdim=True).clamp(min=1).to(cls_logits.dtype)
    w0 = torch.where(n_pos > 0, n_pos / n_lab, torch.ones_like(n_pos))
    w1 = 1.0 - n_pos / n_lab
    w_neg = w0.expand(n, k)
    if distractor > 0 and others_xyxy is not None and others_xyxy.numel():
        on_other = box_iou(flat, others_xyxy.to(flat)).amax(dim=1).reshape(n, k) > pos_iou
        w_neg = torch.where(on_other & neg, torch.full_like(w_neg, distractor), w_neg)
    weight = torch.where(pos, w1, torch.where(neg, w_neg, torch.zeros_like(w_neg)))
    logit = cls_logits[..., 1] - cls_logits[..., 0]
    loss = sigmoid_focal_loss(logit, pos.to(logit.dtype), alpha=None, gamma=gamma,
                              weight=weight.to(logit.dtype), reduction="none")
    return loss.mean(dim=1).mean()


class SiamRPNTrainTracks:
    """The tracks of one training clip: a :class:`BatchedSiamRPNTracker` over the shared network,
    with DeepMOT's augmentations (``augment``: the config's ``AugmentConfig``)."""

    def __init__(self, model: nn.Module, augment: Any, size_smoothing: bool):
        self.tracker = BatchedSiamRPNTracker(model)
        self.augment, self.size_smoothing = augment, size_smoothing

    @property
    def ids(self) -> list[int]:
        """Live track ids, in row order."""
        return self.tracker.ids

    def __len__(self) -> int:
        return len(self.tracker)

    def _jitter(self, boxes: Tensor, prob: float, gen: torch.Generator) -> Tensor:
        xywh = jitter_box_scale(xyxy_to_xywh(boxes.double()), prob, *self.augment.scale_range, gen)
        xywh[:, 2:] = xywh[:, 2:].clamp(min=1.0)
        return xywh

    def _augment_templates(self, ids: list[int], gen: torch.Generator) -> None:
        p = self.augment.template_photometric_prob
        if p <= 0 or not ids:
            return
        s = self.tracker.state
        rows = torch.tensor([s.ids.index(i) for i in ids], dtype=torch.long)
        s.templates[rows] = augment_crops(s.templates[rows].cpu(), p, gen).to(s.templates.device)
        with torch.no_grad():
            s.zf = self.tracker.encode_templates(s.templates)

    def add(self, image: np.ndarray, boxes: Tensor, gen: torch.Generator) -> list[int]:
        """New tracks from 0-based xyxy ``boxes (K, 4)``, box-scale jittered, templates augmented."""
        new = self.tracker.add(image, self._jitter(boxes, self.augment.birth_scale_prob, gen))
        self._augment_templates(new, gen)
        return new

    def reinit(self, image: np.ndarray, ids: Sequence[int], boxes: Tensor, gen: torch.Generator) -> None:
        """Template refresh of ``ids`` from ``boxes (K, 4)``, jittered and augmented as births."""
        ids = list(ids)
        self.tracker.reinit(image, ids, self._jitter(boxes, self.augment.refresh_scale_prob, gen))
        self._augment_templates(ids, gen)

    def remove(self, ids: Sequence[int]) -> None:
        """End tracks ``ids``."""
        self.tracker.remove(list(ids))

    def step(self, image: np.ndarray, gen: torch.Generator) -> StepOutput:
        """:func:`train_step` on photometrically augmented search crops; state unchanged."""
        p = self.augment.search_photometric_prob
        out = train_step(self.tracker, image, search_transform=lambda x: augment_crops(x, p, gen),
                         size_smoothing=self.size_smoothing)
        return StepOutput(ids=out.ids, boxes=out.boxes, aux_input=out.cls_logits, state=out)

    def advance(self, out: StepOutput) -> None:
        """PySOT's state update of ``out`` (:func:`commit`)."""
        commit(self.tracker, out.state)


class SiamRPNTrainable:
    """A SiamRPN network being fine-tuned with DeepMOT, as the loop sees it."""

    weights_name = "siamrpn_deepmot.pth"
    aux_name = "focal"

    def __init__(self, model: nn.Module, cfg: Any):
        self.module, self.cfg = model, cfg
        self.frozen = freeze_early_convs(model, cfg.frozen_convs)
        if cfg.train_params:                 # only the parameters whose name matches train
            pattern = re.compile(cfg.train_params)
            for name, p in model.named_parameters():
                if p.requires_grad and not pattern.search(name):
                    p.requires_grad_(False)
                    self.frozen.append(name)
            if not self.trainable_parameters():
                raise ValueError(f"train_params={cfg.train_params!r} matches no trainable parameter of "
                                 f"{cfg.model!r}")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the frozen convolutions."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def new_tracks(self) -> SiamRPNTrainTracks:
        """An empty track set for a new clip."""
        return SiamRPNTrainTracks(self.module, self.cfg.augment, self.cfg.size_smoothing)

    def aux_loss(self, out: StepOutput, target: Tensor, present: Tensor, gt_boxes: Tensor) -> Tensor:
        """:func:`anchor_focal_loss` of the step's anchor logits against the followed GT boxes
        (``gt_boxes (M, 4)``: the frame's GT, for ``focal_distractor`` negatives)."""
        s, c = out.state, self.cfg
        dev = s.cls_logits.device
        return anchor_focal_loss(s.cls_logits, s.anchors_xyxy.to(dev), target.to(s.cls_logits), present.to(dev),
                                 c.focal_pos_iou, c.focal_neg_iou, c.focal_gamma,
                                 gt_boxes.to(s.cls_logits), c.focal_distractor)

    def sequence_factory(self, mot: list[str]) -> SequenceFactory:
        """Multi-object inference over the current network (``mot``: ``MOTConfig`` overrides)."""
        from trackers.multi_config import MOTConfig
        from trackers.siamrpn.mot import siamrpn_mot_factory

        return siamrpn_mot_factory(self.module, load_config(MOTConfig, None, mot))

    def shipped_state(self) -> tuple[dict[str, Tensor] | None, str]:
        """The shipped synthetic weights (:data:`trackers.siamrpn.pretrain.SYNTHETIC_WEIGHTS`) in
        this model's layout and their path, or ``(None, why not)`` when absent or not fitting."""
        from trackers.siamrpn.checkpoint import CheckpointMismatchError
        from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS

        path = Path(SYNTHETIC_WEIGHTS)
        if not path.is_file():
            return None, f"no shipped weights at {path}"
        model = build_siamrpn(self.cfg.model, self.cfg.model_overrides)
        try:
            load_pysot_checkpoint(model, path)
        except CheckpointMismatchError:
            return None, f"the shipped weights {path.name} do not fit model {self.cfg.model!r}"
        return model.state_dict(), str(path)


def starting_model(cfg: Any, ctx: TrainContext) -> nn.Module:
    """The SiamRPN to fine-tune: ``cfg.pretrained`` weights, or SOT pre-training on the training
    data first (once per run directory; rank 0 trains, the others wait and load)."""
    model = build_siamrpn(cfg.model, cfg.model_overrides)
    weights = cfg.pretrained
    if not weights:
        weights = str(ctx.run_dir / "sot_pretrained.pth")
        if ctx.main and not Path(weights).is_file():
            from trackers.siamrpn.pretrain import PretrainConfig, pretrain

            pcfg = load_config(PretrainConfig, None, [
                f"model={cfg.model}", f"data={ctx.data_root}", f"split={cfg.train_split}",
                f"out={weights}", f"runs_root={ctx.run_dir / 'pretrain'}", f"seed={cfg.seed}",
                f"threads={cfg.threads}", *cfg.pretrain])
            pcfg.model_overrides = list(cfg.model_overrides)
            earlier = sorted((ctx.run_dir / "pretrain" / "siamrpn_pretrain").glob("*/checkpoints/last.pt"))
            resume_dir = str(earlier[-1].parent.parent) if earlier else None   # an interrupted stage
            ctx.log("no --pretrained weights: SOT pre-training on %s first%s", ctx.data_root,
                    f" (resuming {resume_dir})" if resume_dir else "")
            pretrain(pcfg, resume=resume_dir)
            torch.set_num_threads(cfg.threads)
        ctx.barrier()
    load_pysot_checkpoint(model, weights)
    return model


def build_trainable(cfg: Any, ctx: TrainContext) -> SiamRPNTrainable:
    """The ``"siamrpn"`` training entry: :func:`starting_model` on ``ctx.device``, early convs frozen."""
    return SiamRPNTrainable(starting_model(cfg, ctx).to(ctx.device), cfg)
