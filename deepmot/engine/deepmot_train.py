"""DeepMOT fine-tuning of a Siamese tracker (``python train.py --tracker siamrpn``).

The loop (specs/deepmot.md §6.4, with the fixes of §8.5, 8.8-8.16):

* training sequences are cut into clips of ``seq_len`` frames, shuffled every epoch
  (:mod:`deepmot.engine.clips`); ``clips_per_step`` clips run side by side (split over ranks);
* on a clip's first frame (and whenever it has no live track) one track is born per GT box;
* on every other frame, ``num_repeats`` optimiser steps, **each starting from the same
  previous-frame state** (§8.12): the differentiable batched SiamRPN step for all live tracks
  -> :class:`~deepmot.criterion.DeepMOTLoss` (frozen DHN) + ``w_focal`` x anchor focal loss with
  IoU labels -> backward -> Adam (early backbone convs frozen, BatchNorm in eval mode);
* after the last repeat the tracker state moves on (PySOT's update of that repeat's outputs);
  every ``refresh_every`` frames the matched tracks are re-initialised from their matched GT;
  deaths (rows of the hard TP mask without a match) and births (GT columns without one) follow;
  new templates get box-scale and photometric augmentation;
* every ``eval_every`` steps the tracker runs on the validation sequences with public detections
  (multi-object inference) and MOTA / IDF1 / HOTA / IDs are logged; the best checkpoint by
  ``best_metric`` is kept; curves are plotted to ``curves.png`` at the end.

Frames without GT end every track (nothing to match) and give no loss; the identity memory
persists across such gaps, as CLEAR-MOT's does. Checkpoints are written between clip batches, so
``--resume`` replays nothing and continues exactly (clip order and augmentation RNGs depend only
on ``(seed, epoch, position)``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import torch
from torch import Tensor, nn

from deepmot.boxes import box_iou
from deepmot.config import (Device, Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, Range,
                            config_to_dict, load_config)
from deepmot.criterion import DeepMOTLoss
from deepmot.datasets import Sequence, discover_sequences
from deepmot.engine.checkpoint import atomic_write, check_finite_state, rng_state, save_checkpoint, set_rng_state
from deepmot.engine.clips import (AugmentConfig, ClipTracks, augment_crops, clip_generator, cut_clips,
                                  epoch_order, shard)
from deepmot.engine.distributed import (DistInfo, all_reduce_gradients, all_reduce_sum, barrier,
                                        broadcast_object, broadcast_parameters, cleanup_distributed,
                                        init_distributed)
from deepmot.engine.plots import plot_curves
from deepmot.engine.run import Run, load_latest_checkpoint
from deepmot.engine.seed import seed_everything
from deepmot.losses.focal import sigmoid_focal_loss

__all__ = ["DeepMOTTrainConfig", "AugmentConfig", "ValidationConfig", "anchor_focal_loss",
           "freeze_early_convs", "build_dhn", "DeepMOTTrainer", "run"]


# --------------------------------------------------------------------------- config
@dataclass
class ValidationConfig:
    """Validation by multi-object inference with public detections (``trackers.multi``).

    ``split``/``frames``: which sequences and frames (MOT17: ``train`` + ``val-half``; the
    synthetic set: ``test`` + ``full``). ``detections``: MOT17 detector variants to run.
    ``max_sequences``: cap (None = all). ``mot``: ``a.b=value`` overrides of the inference
    config (``trackers.multi_config.MOTConfig`` keys).
    """

    split: str = "test"
    frames: str = "full"
    detections: list[str] = field(default_factory=lambda: ["FRCNN"])
    max_sequences: PositiveInt | None = None
    mot: list[str] = field(default_factory=list)


@dataclass
class DeepMOTTrainConfig:
    """Every option of DeepMOT fine-tuning (``--set key=value`` overrides any of them).

    Reference values (DeepMOT v1 code, specs/deepmot.md §6.3): ``lr=1e-4``, ``epochs=30``,
    ``seq_len=100``, ``num_repeats=3``, ``refresh_every=10``, ``delta=0.7``, ``temperature=10``,
    ``w_motp=5``, ``w_ids=1``; the focal term is ``10 x (10 x focal)`` in v1, i.e. ``w_focal=100``
    against the dMOTA error (§8.11).

    The per-frame loss is ``w_mota * dMOTA + w_motp * dMOTP + w_focal * focal`` (``w_mota=1`` in
    the paper; ``w_ids`` weighs the soft ID switches inside dMOTA). A zero weight leaves its term
    out of the loss altogether (the ablations); at least one weight must be positive.
    """

    name: str = "deepmot_siamrpn"
    seed: NonNegativeInt = 0
    threads: PositiveInt = 2
    device: Device = "auto"
    runs_root: str = "runs"
    # data
    data: str | None = None              # MOT-format root; None: data/MOT17, else the synthetic set
    train_split: str = "train"
    train_frames: str = "full"           # "full" or "train-half" (MOT17 half split)
    train_detections: list[str] = field(default_factory=lambda: ["DPM"])  # one copy per sequence
    min_vis: Fraction = 0.0
    # tracker
    model: str = "siamrpn_alex_tiny"     # SiamRPN config name in configs/ or a YAML path
    model_overrides: list[str] = field(default_factory=list)
    pretrained: str | None = None        # PySOT / DaSiamRPN weights; None: SOT pre-training first
    pretrain: list[str] = field(default_factory=list)   # PretrainConfig overrides (steps=..., ...)
    size_smoothing: bool = False         # v1's lr-smoothed box as the differentiable output
    frozen_convs: NonNegativeInt = 3     # first backbone convolutions kept frozen
    # criterion
    dhn: str | None = None               # DHN weights; None: the shipped DeepHungarianNet.pretrained()
    iou_threshold: NonNegative = 0.5     # IoU gate of the criterion (> 1 forbids every pair)
    delta: Fraction = 0.7
    temperature: Positive = 10.0
    w_mota: NonNegative = 1.0            # dMOTA term (0: focal and/or dMOTP only)
    w_motp: NonNegative = 5.0
    w_ids: NonNegative = 1.0
    ids_mode: Literal["paper", "v1"] = "paper"
    w_focal: NonNegative = 100.0
    focal_gamma: NonNegative = 2.0
    focal_pos_iou: Fraction = 0.6
    focal_neg_iou: Fraction = 0.3
    # loop
    epochs: PositiveInt = 30
    max_steps: PositiveInt | None = None  # stop after this many optimiser steps
    seq_len: Annotated[int, Range(ge=2)] = 100
    num_repeats: PositiveInt = 3
    refresh_every: NonNegativeInt = 10
    clips_per_step: PositiveInt = 1      # clips trained side by side (global, over all ranks)
    lr: Positive = 1e-4
    grad_clip: Positive | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # logging, evaluation, checkpoints
    log_every: PositiveInt = 20
    log_grad_terms: bool = False         # log per-term gradient norms (one extra backward each)
    eval_every: NonNegativeInt = 500     # steps; 0 disables periodic evaluation
    eval_before: bool = True             # evaluate the starting tracker too
    eval_after: bool = True              # evaluate the final tracker
    best_metric: str = "MOTA"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint_every: PositiveInt = 1    # clip batches between checkpoints

    def __post_init__(self) -> None:
        weights = {"w_mota": self.w_mota, "w_motp": self.w_motp, "w_focal": self.w_focal}
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"loss weights {weights}: at least one must be > 0 (else nothing trains)")
        if self.focal_neg_iou > self.focal_pos_iou:
            raise ValueError(f"focal_neg_iou={self.focal_neg_iou} must not exceed "
                             f"focal_pos_iou={self.focal_pos_iou}")


# --------------------------------------------------------------------------- pieces
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
                      pos_iou: float = 0.6, neg_iou: float = 0.3, gamma: float = 2.0) -> Tensor:
    """DeepMOT's anchor classification loss (§6.5), averaged over tracks.

    ``cls_logits (N, K, 2)`` (background, foreground) logits; ``anchors_xyxy (N, K, 4)`` each
    track's anchors in image pixels; ``target_xyxy (N, 4)`` the box of the GT object each track
    follows and ``present (N,)`` bool whether it is in the frame (if not, every anchor is
    negative). Anchors with IoU > ``pos_iou`` are positive, < ``neg_iou`` negative, others
    ignored. Class-balanced focal loss on the 2-way softmax (= sigmoid of the logit difference):
    positives weigh ``1 - n_pos/n``, negatives ``n_pos/n`` (1 when there is no positive); mean
    over the K anchors of a track, then over tracks. Returns a 0-d tensor.
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
    weight = torch.where(pos, w1, torch.where(neg, w0, torch.zeros_like(w0)))
    logit = cls_logits[..., 1] - cls_logits[..., 0]
    loss = sigmoid_focal_loss(logit, pos.to(logit.dtype), alpha=None, gamma=gamma,
                              weight=weight.to(logit.dtype), reduction="none")
    return loss.mean(dim=1).mean()


def _siamrpn():
    """The SiamRPN pieces the loop drives (imported late: ``trackers`` depends on ``deepmot``)."""
    from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
    from trackers.siamrpn.tracker import BatchedSiamRPNTracker
    from trackers.siamrpn.train_step import commit, train_step

    return build_siamrpn, load_pysot_checkpoint, BatchedSiamRPNTracker, train_step, commit


def build_dhn(path: str | None, device: torch.device) -> nn.Module:
    """The frozen DHN: weights at ``path``, or the shipped ones (clear error when absent)."""
    from deepmot.dhn.model import DeepHungarianNet

    try:
        dhn = DeepHungarianNet.pretrained(path)
    except FileNotFoundError as e:
        hint = "" if path else (" (no shipped DHN weights in this checkout: train one with "
                                "`python train.py --dhn` and pass --dhn <weights>)")
        raise FileNotFoundError(f"{e}{hint}") from None
    return dhn.to(device).freeze()


# --------------------------------------------------------------------------- trainer
class DeepMOTTrainer:
    """Holds the model, criterion, optimiser and data of one fine-tuning run; :meth:`fit` trains.

    ``evaluate_fn(model, step) -> {metric: value}`` validates the current weights (default:
    multi-object inference on the validation sequences, :meth:`default_evaluate`).
    """

    def __init__(self, cfg: DeepMOTTrainConfig, run: Run, dist_info: DistInfo, data_root: Path,
                 model: nn.Module, dhn: nn.Module,
                 evaluate_fn: Callable[[nn.Module, int], dict] | None = None):
        if cfg.num_repeats < 1 or cfg.seq_len < 2 or cfg.refresh_every < 0:
            raise ValueError("need num_repeats >= 1, seq_len >= 2, refresh_every >= 0")
        weights = {"w_mota": cfg.w_mota, "w_motp": cfg.w_motp, "w_focal": cfg.w_focal}
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {weights}")
        if cfg.clips_per_step % dist_info.world:
            raise ValueError(f"clips_per_step={cfg.clips_per_step} must be a multiple of the "
                             f"number of processes ({dist_info.world})")
        self.cfg, self.run, self.dist, self.data_root = cfg, run, dist_info, data_root
        self.model = model.to(dist_info.device)
        self.frozen = freeze_early_convs(self.model, cfg.frozen_convs)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        broadcast_parameters(self.model)
        for p in self.params:          # explicit zeros: same optimiser behaviour on every rank
            p.grad = torch.zeros_like(p)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.criterion = DeepMOTLoss(dhn, iou_threshold=cfg.iou_threshold, delta=cfg.delta,
                                     temperature=cfg.temperature, w_ids=cfg.w_ids, w_motp=cfg.w_motp,
                                     ids_mode=cfg.ids_mode)
        self.evaluate_fn = evaluate_fn or self.default_evaluate
        infos = discover_sequences(data_root, cfg.train_split, detections=cfg.train_detections or None)
        self.sequences = [Sequence(i, detections=None, frame_range=cfg.train_frames) for i in infos]
        self.clips = cut_clips([(s.start, s.end) for s in self.sequences], cfg.seq_len)
        if not self.clips:
            raise ValueError(f"no training clips of >= 2 frames in {data_root}/{cfg.train_split}")
        self.step = 0
        self.epoch = 0
        self.batch = 0                 # next clip batch within the epoch
        self.history: list[dict] = []  # evaluation results
        self.best: float | None = None
        self.last_eval_step: int | None = None
        self.finished = False

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (plain types and tensors)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "epoch": self.epoch, "batch": self.batch, "rng": rng_state(),
                "history": self.history, "best": self.best, "last_eval_step": self.last_eval_step,
                "finished": self.finished, "config": config_to_dict(self.cfg),
                "model_config": config_to_dict(self.model.cfg) if hasattr(self.model, "cfg") else {}}

    def load_state_dict(self, ck: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.step, self.epoch, self.batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        self.history, self.best = list(ck["history"]), ck["best"]
        self.last_eval_step = ck.get("last_eval_step")
        self.finished = bool(ck.get("finished", False))
        set_rng_state(ck["rng"])

    def save(self, name: str = "last.pt") -> None:
        """Write a checkpoint (rank 0 only)."""
        if self.dist.main:
            save_checkpoint(self.run.checkpoint_dir / name, self.state_dict())

    # ------------------------------------------------------------- evaluation
    def default_evaluate(self, model: nn.Module, step: int) -> dict:
        """Multi-object inference with public detections + official evaluation on the
        validation sequences (:func:`deepmot.engine.inference.evaluate_tracker`)."""
        from deepmot.engine.inference import evaluate_tracker
        from trackers.multi_config import MOTConfig

        v = self.cfg.validation
        seqs = discover_sequences(self.data_root, v.split, detections=v.detections or None)
        if v.max_sequences is not None:
            seqs = seqs[:v.max_sequences]
        mot = load_config(MOTConfig, None, v.mot)
        out_dir = self.run.dir / "eval" / f"step{step:07d}"
        frames = None if v.frames == "full" else v.frames
        return evaluate_tracker(model, seqs, mot, out_dir, frame_range=frames)

    def evaluate(self) -> dict:
        """Validate now (rank 0), log, keep the best checkpoint; returns the metrics."""
        metrics: dict = {}
        if self.dist.main:
            t0 = time.time()
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                raw = self.evaluate_fn(self.model, self.step)
            metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}
            self.model.train(was_training)
            self.run.log_scalars(self.step, {f"val/{k}": v for k, v in metrics.items()})
            shown = [k for k in ("MOTA", "IDF1", "HOTA", "MOTP", "IDSW", "FP", "FN") if k in metrics]
            self.run.logger.info("eval @ step %d (%.0fs): %s", self.step, time.time() - t0,
                                 ", ".join(f"{k} {metrics[k]:.4g}" for k in shown or metrics))
            self.history.append({"step": self.step, **metrics})
            value = metrics.get(self.cfg.best_metric)
            if value is not None and math.isfinite(value) and (self.best is None or value > self.best):
                self.best = value
                save_checkpoint(self.run.checkpoint_dir / "best.pt", self.state_dict())
        self.last_eval_step = self.step
        barrier()
        return metrics

    # ------------------------------------------------------------- the loop
    def _start_clips(self, order: list[int], batch: int) -> list[ClipTracks]:
        _, _, Tracker, _, _ = _siamrpn()
        b = self.cfg.clips_per_step
        positions = list(range(batch * b, min((batch + 1) * b, len(order))))
        mine = shard(positions, self.dist.rank, self.dist.world)
        return [ClipTracks(self.clips[order[p]], self.sequences[self.clips[order[p]].seq],
                           Tracker(self.model), clip_generator(self.cfg.seed, self.epoch, p), self.cfg.augment)
                for p in mine]

    def _frame_step(self, clips: list[ClipTracks]) -> dict:
        """Train on the next frame of every clip; returns summed logging values."""
        cfg = self.cfg
        _, _, _, train_step, commit = _siamrpn()
        active = []
        for c in clips:
            if c.done:
                continue
            image, gids, gboxes = c.load_frame(cfg.min_vis)
            if gids.numel() == 0:          # nothing to match: every track ends, no loss
                c.end_all()
            elif len(c.tracker) == 0:      # first frame or all dead: births, no loss
                c.births(image, gids, gboxes)
            else:
                active.append(c)
        logs: dict[str, float] = {}
        for r in range(cfg.num_repeats):
            self.optimizer.zero_grad(set_to_none=False)
            for c in active:
                image, gids, gboxes = c.frame_data
                aug = (lambda x, g=c.gen: augment_crops(x, cfg.augment.search_photometric_prob, g))
                out = train_step(c.tracker, image, search_transform=aug, size_smoothing=cfg.size_smoothing)
                h, w = image.shape[:2]
                res = self.criterion(out.boxes, out.ids, gboxes.to(out.boxes), gids, (w, h), c.memory)
                focal = self._focal(c, out, gids, gboxes)
                loss = self._loss(res, focal)
                if cfg.log_grad_terms and r == cfg.num_repeats - 1:
                    for k, v in self._grad_terms(out, res, focal).items():
                        logs[k] = logs.get(k, 0.0) + v
                (loss / cfg.clips_per_step).backward()
                c.result = (out, res)
                if r == cfg.num_repeats - 1:
                    for k, v in (("loss", loss), ("dmota", res.dmota), ("dmotp", res.dmotp),
                                 ("focal", focal), ("fp", res.fp), ("fn", res.fn), ("ids", res.ids)):
                        logs[k] = logs.get(k, 0.0) + float(v.detach())
                    # DHN fidelity on this frame's matrix: its 0.5-thresholded output vs the exact TP mask
                    exact = bool(((res.assignment.detach() > 0.5) == res.tp_mask).all())
                    logs["dhn_exact"] = logs.get("dhn_exact", 0.0) + float(exact)
                    logs["tracks"] = logs.get("tracks", 0.0) + len(out.ids)
                    logs["gt"] = logs.get("gt", 0.0) + int(gids.numel())
                    logs["clips"] = logs.get("clips", 0.0) + 1
            all_reduce_gradients(self.params)
            (contributing,) = all_reduce_sum([float(len(active))], self.dist.device)
            if contributing > 0:
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                self.step += 1
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    break
        for c in active:
            c.after_frame(commit, bool(cfg.refresh_every) and (c.pos + 1) % cfg.refresh_every == 0)
        for c in clips:
            if not c.done:
                c.pos += 1
        return logs

    def _loss(self, res: Any, focal: Tensor) -> Tensor:
        """``w_mota * dMOTA + w_motp * dMOTP + w_focal * focal`` (0-d); zero-weight terms are
        left out (not multiplied by 0, so a non-finite term cannot leak in)."""
        cfg = self.cfg
        terms = [w * t for w, t in ((cfg.w_mota, res.dmota), (cfg.w_motp, res.dmotp),
                                    (cfg.w_focal, focal)) if w != 0]
        return sum(terms[1:], terms[0])

    def _grad_terms(self, out: Any, res: Any, focal: Tensor) -> dict[str, float]:
        """Diagnostics: norms of each weighted loss term's gradient w.r.t. the boxes (dMOTA,
        dMOTP) and the anchor logits (focal)."""
        cfg = self.cfg
        terms = {"grad/dmota": (cfg.w_mota * res.dmota, out.boxes),
                 "grad/dmotp": (cfg.w_motp * res.dmotp, out.boxes),
                 "grad/focal": (cfg.w_focal * focal, out.cls_logits)}
        norms = {}
        for k, (y, x) in terms.items():
            g = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)[0] if y.requires_grad else None
            norms[k] = float(g.norm()) if g is not None else 0.0
        return norms

    def _focal(self, c: ClipTracks, out: Any, gids: Tensor, gboxes: Tensor) -> Tensor:
        row = {g: i for i, g in enumerate(gids.tolist())}
        idx = [row.get(c.gt_of.get(t, -1), -1) for t in out.ids]
        present = torch.tensor([i >= 0 for i in idx], dtype=torch.bool, device=out.cls_logits.device)
        target = gboxes[torch.tensor([max(i, 0) for i in idx], dtype=torch.long)].to(out.cls_logits)
        return anchor_focal_loss(out.cls_logits, out.anchors_xyxy.to(out.cls_logits.device), target,
                                 present, self.cfg.focal_pos_iou, self.cfg.focal_neg_iou, self.cfg.focal_gamma)

    def _stop(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def fit(self) -> dict:
        """Train until ``epochs`` or ``max_steps``; returns ``{"before": metrics, "after": metrics}``
        (the first and last evaluations; empty when evaluation is off)."""
        cfg = self.cfg
        log = self.run.logger
        if cfg.eval_before and not self.history and not self.finished:
            self.evaluate()
        t0, steps0 = time.time(), self.step
        acc: dict[str, float] = {}
        while self.epoch < cfg.epochs and not self._stop() and not self.finished:
            order = epoch_order(len(self.clips), cfg.seed, self.epoch)
            n_batches = math.ceil(len(order) / cfg.clips_per_step)
            while self.batch < n_batches and not self._stop():
                clips = self._start_clips(order, self.batch)
                longest = all_reduce_sum([float(max((len(c.clip) for c in clips), default=0))],
                                         self.dist.device)
                for _ in range(int(max(longest))):   # lockstep over ranks
                    before = self.step
                    for k, v in self._frame_step(clips).items():
                        acc[k] = acc.get(k, 0.0) + v
                    if self.step // cfg.log_every > before // cfg.log_every and acc.get("clips"):
                        n = acc.pop("clips")
                        scalars = {f"train/{k}": v / n for k, v in acc.items()}
                        self.run.log_scalars(self.step, scalars)
                        log.info("epoch %d step %d: %s (%.2fs/step)", self.epoch, self.step,
                                 ", ".join(f"{k.split('/', 1)[1]} {v:.4g}" for k, v in scalars.items()),
                                 (time.time() - t0) / max(self.step - steps0, 1))
                        acc = {}
                    if self._stop():
                        break
                if self._stop():
                    break
                self.batch += 1
                if cfg.eval_every > 0 and self.step - (self.last_eval_step or 0) >= cfg.eval_every:
                    self.evaluate()
                if self.batch % max(cfg.checkpoint_every, 1) == 0:
                    self.save()
            if not self._stop():
                self.epoch += 1
                self.batch = 0
        if not self.finished:
            self.finished = True
            if cfg.eval_after and self.last_eval_step != self.step:
                self.evaluate()
            self.save()
        return {"before": self.history[0] if self.history else {},
                "after": self.history[-1] if self.history else {}}


# --------------------------------------------------------------------------- wiring
def _starting_model(cfg: DeepMOTTrainConfig, run_obj: Run, dist_info: DistInfo, data_root: Path) -> nn.Module:
    """The SiamRPN to fine-tune: ``cfg.pretrained`` weights, or SOT pre-training on the training
    data first (once per run directory; rank 0 trains, the others wait and load)."""
    build_siamrpn, load_pysot_checkpoint, _, _, _ = _siamrpn()
    model = build_siamrpn(cfg.model, cfg.model_overrides)
    weights = cfg.pretrained
    if not weights:
        weights = str(run_obj.dir / "sot_pretrained.pth")
        if dist_info.main and not Path(weights).is_file():
            from trackers.siamrpn.pretrain import PretrainConfig, pretrain

            pcfg = load_config(PretrainConfig, None, [
                f"model={cfg.model}", f"data={data_root}", f"split={cfg.train_split}",
                f"out={weights}", f"runs_root={run_obj.dir / 'pretrain'}", f"seed={cfg.seed}",
                f"threads={cfg.threads}", *cfg.pretrain])
            pcfg.model_overrides = list(cfg.model_overrides)
            earlier = sorted((run_obj.dir / "pretrain" / "siamrpn_pretrain").glob("*/checkpoints/last.pt"))
            resume_dir = str(earlier[-1].parent.parent) if earlier else None   # an interrupted stage
            run_obj.logger.info("no --pretrained weights: SOT pre-training on %s first%s", data_root,
                                f" (resuming {resume_dir})" if resume_dir else "")
            pretrain(pcfg, resume=resume_dir)
            torch.set_num_threads(cfg.threads)
        barrier()
    load_pysot_checkpoint(model, weights)
    return model


def run(cfg: DeepMOTTrainConfig, resume: str | None = None,
        evaluate_fn: Callable[[nn.Module, int], dict] | None = None) -> dict:
    """Fine-tune with DeepMOT as configured; ``resume``: a run directory to continue.

    Returns ``{"before", "after", "run_dir"}``. Works single-process or under ``torchrun``.
    """
    from deepmot.datasets import resolve_data_root

    from deepmot.engine.preflight import check_training_inputs

    check_training_inputs(cfg)  # every file and option checked before a run directory exists
    dist_info = init_distributed(cfg.device)
    try:
        torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        run_obj = Run.create(cfg.name, cfg, root=cfg.runs_root, resume=resume)
        run_obj.dir = Path(broadcast_object(str(run_obj.dir)))       # rank 0's directory
        run_obj.checkpoint_dir = run_obj.dir / "checkpoints"
        data_root = resolve_data_root(cfg.data, log=run_obj.logger.info) if dist_info.main else None
        data_root = Path(broadcast_object(str(data_root) if data_root else None))
        model = _starting_model(cfg, run_obj, dist_info, data_root)
        dhn = build_dhn(cfg.dhn, dist_info.device)
        trainer = DeepMOTTrainer(cfg, run_obj, dist_info, data_root, model, dhn, evaluate_fn)
        if resume is not None:
            found = load_latest_checkpoint(run_obj.dir, map_location=dist_info.device,
                                           log=run_obj.logger.warning)
            if found is not None:
                ck_path, ck = found
                trainer.load_state_dict(ck)
                run_obj.logger.info("resumed at epoch %d, batch %d, step %d from %s",
                                    trainer.epoch, trainer.batch, trainer.step, ck_path)
        run_obj.logger.info("DeepMOT fine-tuning: %d clips from %d sequences, %d trainable "
                            "parameters, %d frozen tensors, %d process(es)", len(trainer.clips),
                            len(trainer.sequences), sum(p.numel() for p in trainer.params),
                            len(trainer.frozen), dist_info.world)
        result = trainer.fit()
        if dist_info.main:
            final = run_obj.dir / "siamrpn_deepmot.pth"
            check_finite_state(trainer.model.state_dict(), f"{final} not written (did the training diverge?)")
            atomic_write(final, lambda f: torch.save(trainer.model.state_dict(), f))
            plot = plot_curves(run_obj.dir, trainer.history, run_obj.dir / "metrics.csv")
            b, a = result["before"], result["after"]
            for key in ("MOTA", "IDF1", "HOTA", "IDSW"):
                if key in b or key in a:
                    run_obj.logger.info("%-5s before %8.4g  after %8.4g", key, b.get(key, float("nan")),
                                        a.get(key, float("nan")))
            run_obj.logger.info("weights: %s%s", final, f"; curves: {plot}" if plot else "")
        run_obj.close()
        result["run_dir"] = str(run_obj.dir)
        return result
    finally:
        cleanup_distributed()
