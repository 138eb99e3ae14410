"""DeepMOT fine-tuning of any trainable tracker (``python train.py --tracker NAME``).

The loop knows the tracker only through :mod:`deepmot.engine.protocol` (it imports no tracker);
the bullets below name what the SiamRPN (``trackers/siamrpn/trainable.py``) does in its part.
The loop (specs/deepmot.md §6.4, with the fixes of §8.5, 8.8-8.16):

* training sequences are cut into clips of ``seq_len`` frames, shuffled every epoch
  (:mod:`deepmot.engine.clips`); ``clips_per_step`` clips run side by side (split over ranks);
* on a clip's first frame (and whenever it has no live track) one track is born per GT box;
* on every other frame, ``num_repeats`` optimiser steps, **each starting from the same
  previous-frame state** (§8.12): the tracker's differentiable step for all live tracks (SiamRPN:
  batched, BatchNorm in eval mode) -> :class:`~deepmot.criterion.DeepMOTLoss` (frozen DHN) +
  ``w_focal`` x the tracker's auxiliary loss (SiamRPN: anchor focal loss with IoU labels;
  Tracktor: the criterion on appearance distances, through the loop's criterion) ->
  backward -> Adam over the tracker's trainable parameters (SiamRPN: early backbone convs frozen);
* after the last repeat the tracker state moves on (PySOT's update of that repeat's outputs);
  every ``refresh_every`` frames the matched tracks are re-initialised from their matched GT;
  deaths (rows of the hard TP mask without a match) and births (GT columns without one) follow;
  the tracker augments new templates (SiamRPN: box-scale and photometric augmentation);
* every ``eval_every`` steps the tracker runs on the validation sequences with public detections
  (multi-object inference) and MOTA / IDF1 / HOTA / IDs are logged; the best checkpoint by
  ``best_metric`` is kept; curves are plotted to ``curves.png`` at the end.

Frames without GT end every track (nothing to match) and give no loss; the identity memory
persists across such gaps, as CLEAR-MOT's does. Checkpoints are written between clip batches, so
``--resume`` replays nothing and continues exactly (clip order and augmentation RNGs depend only
on ``(seed, epoch, position)``); SIGTERM / SIGUSR1 write one at the next batch boundary and exit
(:mod:`deepmot.runtime.preempt`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from deepmot.config import config_to_dict
from deepmot.criterion import DeepMOTLoss
from deepmot.datasets import Sequence, discover_sequences
from deepmot.engine.clips import ClipTracks, clip_generator, cut_clips, epoch_order, expected_steps, shard
from deepmot.engine.deepmot_config import AugmentConfig, DeepMOTTrainConfig, ValidationConfig
from deepmot.engine.protocol import StepOutput, TrainableTracker, TrainContext
from deepmot.evaluation.report import format_metric
from deepmot.progress import progress
from deepmot.runtime.checkpoint import (atomic_write, check_finite_state, resume_training, save_checkpoint,
                                        training_state)
from deepmot.runtime.distributed import (DistInfo, all_reduce_gradients, all_reduce_sum, any_rank, barrier,
                                        broadcast_object, broadcast_parameters, cleanup_distributed,
                                        init_distributed)
from deepmot.runtime.plots import plot_curves
from deepmot.runtime.preempt import PreemptionGuard
from deepmot.runtime.run import Run
from deepmot.runtime.seed import seed_everything

__all__ = ["DeepMOTTrainConfig", "AugmentConfig", "ValidationConfig", "build_dhn", "DeepMOTTrainer",
           "TrainableBuilder", "run"]

#: builds the tracker to fine-tune from the config (a ``TrackerPlugin.build_trainable``)
TrainableBuilder = Callable[[DeepMOTTrainConfig, TrainContext], TrainableTracker]


# --------------------------------------------------------------------------- pieces
def build_dhn(path: str | None, device: torch.device) -> nn.Module:
    """The frozen DHN: weights at ``path``, or the shipped ones (clear error when absent)."""
    from deepmot.dhn.model import DeepHungarianNet

    try:
        dhn = DeepHungarianNet.pretrained(path)
    except FileNotFoundError as e:
        hint = "" if path else (" (no shipped DHN weights in this checkout: train one with "
                                "`python train.py --dhn` and pass --dhn-weights <weights>)")
        raise FileNotFoundError(f"{e}{hint}") from None
    return dhn.to(device).freeze()


# --------------------------------------------------------------------------- trainer
class DeepMOTTrainer:
    """Holds the tracker, criterion, optimiser and data of one fine-tuning run; :meth:`fit` trains.

    ``tracker``: a :class:`~deepmot.engine.protocol.TrainableTracker` (its network already on
    ``dist_info.device``). ``evaluate_fn(model, step) -> {metric: value}`` validates the current weights (default:
    multi-object inference on the validation sequences, :meth:`default_evaluate`).
    """

    def __init__(self, cfg: DeepMOTTrainConfig, run: Run, dist_info: DistInfo, data_root: Path,
                 tracker: TrainableTracker, dhn: nn.Module,
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
        self.tracker = tracker
        self.model = tracker.module
        self.frozen = tracker.frozen
        self.params = tracker.trainable_parameters()
        broadcast_parameters(self.model)
        for p in self.params:          # explicit zeros: same optimiser behaviour on every rank
            p.grad = torch.zeros_like(p)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.criterion = DeepMOTLoss(dhn, iou_threshold=cfg.iou_threshold, delta=cfg.delta,
                                     temperature=cfg.temperature, w_ids=cfg.w_ids, w_motp=cfg.w_motp,
                                     ids_mode=cfg.ids_mode, assignment=cfg.assignment, gate=cfg.gate,
                                     gate_width=cfg.gate_width, sinkhorn_eps=cfg.sinkhorn_eps,
                                     sinkhorn_iters=cfg.sinkhorn_iters)
        set_criterion = getattr(tracker, "set_criterion", None)   # optional: an aux loss on the same criterion
        if set_criterion is not None:
            set_criterion(self.criterion)
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
        return training_state(self.model, self.optimizer, step=self.step, epoch=self.epoch, batch=self.batch,
                              history=self.history, best=self.best, last_eval_step=self.last_eval_step,
                              finished=self.finished, config=config_to_dict(self.cfg),
                              model_config=config_to_dict(self.model.cfg) if hasattr(self.model, "cfg") else {})

    def resume(self, run_dir: Path) -> Path | None:
        """Continue from the newest checkpoint of ``run_dir`` (none yet: start over); returns its path."""
        resumed = resume_training(run_dir, self.model, self.optimizer, map_location=self.dist.device,
                                  log=self.run.logger.warning)
        if resumed is None:
            return None
        ck, path = resumed
        self.step, self.epoch, self.batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        self.history, self.best = list(ck["history"]), ck["best"]
        self.last_eval_step = ck.get("last_eval_step")
        self.finished = bool(ck.get("finished", False))
        return path

    def save(self, name: str = "last.pt") -> None:
        """Write a checkpoint (rank 0 only)."""
        if self.dist.main:
            save_checkpoint(self.run.checkpoint_dir / name, self.state_dict())
            self.run.wrote(self.run.checkpoint_dir / name, "checkpoint")

    # ------------------------------------------------------------- evaluation
    def default_evaluate(self, model: nn.Module, step: int) -> dict:
        """Multi-object inference with public detections (the tracker's
        :meth:`~deepmot.engine.protocol.TrainableTracker.sequence_factory` over the current
        weights) + official evaluation on the validation sequences
        (:func:`deepmot.engine.final_report.evaluate_split`); ``step=-1`` validates the shipped
        weights (put in place of the current ones) for the final report."""
        from deepmot.engine.final_report import evaluate_split

        v = self.cfg.validation
        out_dir = self.run.dir / "eval" / ("shipped" if step < 0 else f"step{step:07d}")
        return evaluate_split(self.tracker.sequence_factory(v.mot), self.data_root, v, out_dir)

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
            self.run.logger.info("eval @ step %d (%.0fs, ratios in %%): %s", self.step, time.time() - t0,
                                 ", ".join(f"{k} {format_metric(k, metrics[k])}" for k in shown or metrics))
            self.history.append({"step": self.step, **metrics})
            value = metrics.get(self.cfg.best_metric)
            if value is not None and math.isfinite(value) and (self.best is None or value > self.best):
                self.best = value
                save_checkpoint(self.run.checkpoint_dir / "best.pt", self.state_dict())
                self.run.wrote(self.run.checkpoint_dir / "best.pt", f"best checkpoint (by {self.cfg.best_metric})")
        self.last_eval_step = self.step
        barrier()
        return metrics

    # ------------------------------------------------------------- the loop
    def _start_clips(self, order: list[int], batch: int) -> list[ClipTracks]:
        b = self.cfg.clips_per_step
        positions = list(range(batch * b, min((batch + 1) * b, len(order))))
        mine = shard(positions, self.dist.rank, self.dist.world)
        return [ClipTracks(self.clips[order[p]], self.sequences[self.clips[order[p]].seq],
                           self.tracker.new_tracks(), clip_generator(self.cfg.seed, self.epoch, p),
                           self.cfg.train_coast)
                for p in mine]

    def _frame_step(self, clips: list[ClipTracks]) -> dict:
        """Train on the next frame of every clip; returns summed logging values."""
        cfg = self.cfg
        active = []
        for c in clips:
            if c.done:
                continue
            image, gids, gboxes = c.load_frame(cfg.min_vis)
            if gids.numel() == 0:          # nothing to match: every track ends, no loss
                c.end_all()
            elif len(c.tracks) == 0:      # first frame or all dead: births, no loss
                c.births(image, gids, gboxes)
            else:
                active.append(c)
        logs: dict[str, float] = {}
        for r in range(cfg.num_repeats):
            self.optimizer.zero_grad(set_to_none=False)
            for c in active:
                image, gids, gboxes = c.frame_data
                out = c.tracks.step(image, c.gen)
                h, w = image.shape[:2]
                res = self.criterion(out.boxes, out.ids, gboxes.to(out.boxes), gids, (w, h), c.memory)
                focal = self.tracker.aux_loss(out, *c.targets(out), gboxes.to(out.boxes))
                loss = self._loss(res, focal)
                if cfg.log_grad_terms and r == cfg.num_repeats - 1:
                    for k, v in self._grad_terms(out, res, focal).items():
                        logs[k] = logs.get(k, 0.0) + v
                (loss / cfg.clips_per_step).backward()
                c.result = (out, res)
                if r == cfg.num_repeats - 1:
                    for k, v in (("loss", loss), ("dmota", res.dmota), ("dmotp", res.dmotp),
                                 (self.tracker.aux_name, focal), ("fp", res.fp), ("fn", res.fn), ("ids", res.ids)):
                        if v is not None:
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
            c.after_frame(bool(cfg.refresh_every) and (c.pos + 1) % cfg.refresh_every == 0)
        for c in clips:
            if not c.done:
                c.pos += 1
        return logs

    def _loss(self, res: Any, focal: Tensor | None) -> Tensor:
        """``w_mota * dMOTA + w_motp * dMOTP + w_focal * aux`` (0-d; ``aux``: the tracker's own
        loss: the anchor focal loss for SiamRPN, the appearance branch for Tracktor); zero-weight
        terms and a tracker without an auxiliary loss (None) are left out (not multiplied by 0,
        so a non-finite term cannot leak in)."""
        cfg = self.cfg
        terms = [w * t for w, t in ((cfg.w_mota, res.dmota), (cfg.w_motp, res.dmotp),
                                    (cfg.w_focal, focal)) if w != 0 and t is not None]
        if not terms:
            raise ValueError("every loss term has weight 0 or is missing (a tracker without an "
                             "auxiliary loss needs w_mota or w_motp > 0)")
        return sum(terms[1:], terms[0])

    def _grad_terms(self, out: StepOutput, res: Any, focal: Tensor | None) -> dict[str, float]:
        """Diagnostics: norms of each weighted loss term's gradient w.r.t. the boxes (dMOTA,
        dMOTP) and the tracker's ``aux_input`` (its auxiliary loss, e.g. anchor logits)."""
        cfg = self.cfg
        terms = {"grad/dmota": (cfg.w_mota * res.dmota, out.boxes),
                 "grad/dmotp": (cfg.w_motp * res.dmotp, out.boxes)}
        if focal is not None and out.aux_input is not None:
            terms[f"grad/{self.tracker.aux_name}"] = (cfg.w_focal * focal, out.aux_input)
        norms = {}
        for k, (y, x) in terms.items():
            g = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)[0] if y.requires_grad else None
            norms[k] = float(g.norm()) if g is not None else 0.0
        return norms

    def _preempted(self) -> None:
        """Preemption between clip batches: write ``last.pt``, close the run, leave the group."""
        self.save()
        self.run.logger.warning("preempted at epoch %d, batch %d, step %d: checkpoint written, "
                                "continue with --resume %s", self.epoch, self.batch, self.step, self.run.dir)
        self.run.close()
        barrier()

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
        total = expected_steps(self.clips, cfg.epochs, cfg.clips_per_step, cfg.num_repeats, cfg.max_steps)
        bar = progress(total=total, initial=self.step, desc="DeepMOT steps", unit="step")
        guard = PreemptionGuard().install()   # SIGTERM / SIGUSR1: checkpoint, clean exit, --resume
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
                    bar.update(self.step - before)
                    if self.step // cfg.log_every > before // cfg.log_every and acc.get("clips"):
                        n = acc.pop("clips")
                        scalars = {f"train/{k}": v / n for k, v in acc.items()}
                        self.run.log_scalars(self.step, scalars)
                        log.info("epoch %d step %d: %s (%.2fs/step)", self.epoch, self.step,
                                 ", ".join(f"{k.split('/', 1)[1]} {100 * v:.3f} %" if k == "train/dhn_exact"
                                           else f"{k.split('/', 1)[1]} {v:.4g}" for k, v in scalars.items()),
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
                guard.check(self._preempted, any_rank(guard.requested, self.dist.device))
            if not self._stop():
                self.epoch += 1
                self.batch = 0
        guard.restore()
        bar.close()
        if not self.finished:
            self.finished = True
            if cfg.eval_after and self.last_eval_step != self.step:
                self.evaluate()
            self.save()
        return {"before": self.history[0] if self.history else {},
                "after": self.history[-1] if self.history else {}}


# --------------------------------------------------------------------------- wiring
def run(cfg: DeepMOTTrainConfig, build: TrainableBuilder, resume: str | None = None,
        evaluate_fn: Callable[[nn.Module, int], dict] | None = None,
        check_inputs: Callable[[DeepMOTTrainConfig], None] | None = None) -> dict:
    """Fine-tune the tracker made by ``build`` (its plugin's ``build_trainable``) with DeepMOT as
    configured; ``resume``: a run directory to continue; ``check_inputs``: the plugin's
    ``check_trainable``, run with the engine's own input checks before a run directory exists
    (:mod:`deepmot.engine.preflight`).

    Returns ``{"before", "after", "run_dir"}`` (validation metrics at the first and last
    evaluation) and, on rank 0, ``"report"`` (:func:`deepmot.engine.final_report.choose_and_report`;
    the tracker's ``weights_name`` holds the handed-back model). Works single-process, under
    ``torchrun`` or under SLURM's ``srun``; SIGTERM / SIGUSR1 write a checkpoint between clip
    batches and exit.
    """
    from deepmot.datasets import resolve_data_root
    from deepmot.engine.preflight import check_training_inputs

    check_training_inputs(cfg, check_inputs)  # every file and option checked before a run directory exists
    dist_info = init_distributed(cfg.device)
    run_obj = None
    try:
        torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        run_obj = Run.create(cfg.name, cfg, root=cfg.runs_root, resume=resume, device=dist_info.device)
        run_obj.dir = Path(broadcast_object(str(run_obj.dir)))       # rank 0's directory
        run_obj.checkpoint_dir = run_obj.dir / "checkpoints"
        data_root = resolve_data_root(cfg.data, log=run_obj.logger.info) if dist_info.main else None
        data_root = Path(broadcast_object(str(data_root) if data_root else None))
        ctx = TrainContext(run_obj.dir, data_root, dist_info.device, dist_info.main, run_obj.logger.info, barrier)
        tracker = build(cfg, ctx)
        dhn = build_dhn(cfg.dhn, dist_info.device)
        trainer = DeepMOTTrainer(cfg, run_obj, dist_info, data_root, tracker, dhn, evaluate_fn)
        if resume is not None:
            ck_path = trainer.resume(run_obj.dir)
            if ck_path is not None:
                run_obj.logger.info("resumed at epoch %d, batch %d, step %d from %s",
                                    trainer.epoch, trainer.batch, trainer.step, ck_path)
        run_obj.logger.info("DeepMOT fine-tuning: %d clips from %d sequences, %d trainable "
                            "parameters, %d frozen tensors, %d process(es)", len(trainer.clips),
                            len(trainer.sequences), sum(p.numel() for p in trainer.params),
                            len(trainer.frozen), dist_info.world)
        result = trainer.fit()
        if dist_info.main:
            from deepmot.engine.final_report import choose_and_report

            result["report"] = choose_and_report(trainer, data_root, trainer.evaluate_fn)
            final = run_obj.dir / tracker.weights_name
            check_finite_state(trainer.model.state_dict(), f"{final} not written (did the training diverge?)")
            atomic_write(final, lambda f: torch.save(trainer.model.state_dict(), f))
            plot = plot_curves(run_obj.dir, trainer.history, run_obj.dir / "metrics.csv")
            run_obj.wrote(final, "handed-back weights")
            if plot:
                run_obj.wrote(plot, "curves")
        run_obj.close()
        result["run_dir"] = str(run_obj.dir)
        return result
    finally:
        if run_obj is not None:
            run_obj.close()  # also after an error: a later run in this process logs only to its own files
        cleanup_distributed()
