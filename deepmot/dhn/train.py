"""DHN pre-training loop behind ``python train.py --dhn``.

Streams same-shape batches of random gated distance matrices (:mod:`deepmot.dhn.data`), mixed
with real-geometry ones from a MOT-format train split when ``tracking_share`` > 0
(:mod:`deepmot.dhn.tracking_data`; ``init`` starts from given weights for fine-tuning),
optimises the weighted binary focal loss of DeepMOT (class weights ``w0 = n1/n``, ``w1 = 1-w0``
per matrix, gamma 2, times ``loss_scale``; ``class_balance`` < 1 moves the weights towards equal
ones) with RMSprop and a step decay from the initial rate
(``lr0 * gamma ** (step // every)``, not compounding), validates periodically on a fixed
held-out set, and writes checkpoints (``last.pt`` and ``best.pt``) that resume exactly. At the end
it writes the run's usable outputs: ``dhn.pt`` (the best validated weights with their
``model_config``, small and ``weights_only``-loadable: :meth:`DeepHungarianNet.pretrained` and
``train.py --tracker siamrpn --dhn-weights`` take it) and ``curves.png`` (loss, validation in percent).
Under ``torchrun`` (``WORLD_SIZE > 1``) it runs DistributedDataParallel (gloo on CPU, NCCL on
GPU); each rank draws its own stream; rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmot.config import (ConfigError, Device, Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt,
                            Range, config_to_dict, save_config)
from deepmot.dhn.data import DHNDataConfig, heldout_set
from deepmot.dhn.metrics import BUCKET_NAMES, evaluate_model, format_table
from deepmot.dhn.model import DeepHungarianNet, DHNConfig
from deepmot.dhn.tracking_data import TrackingPool, dataset_root, mixed_stream
from deepmot.progress import progress
from deepmot.runtime.checkpoint import load_checkpoint, resume_training, save_checkpoint, training_state
from deepmot.runtime.distributed import any_rank, barrier, cleanup_distributed, init_distributed
from deepmot.runtime.plots import plot_scalars
from deepmot.runtime.preempt import PreemptionGuard
from deepmot.runtime.run import Run
from deepmot.runtime.seed import seed_everything

__all__ = ["DHNTrainConfig", "weighted_focal_loss", "step_lr", "train_dhn", "export_weights"]


@dataclasses.dataclass
class DHNTrainConfig:
    """Everything a DHN training run needs (YAML: ``configs/dhn.yaml``)."""

    name: str = "dhn"
    seed: NonNegativeInt = 1
    device: Device = "cpu"
    num_threads: PositiveInt = 2
    model: DHNConfig = dataclasses.field(default_factory=DHNConfig)
    data: DHNDataConfig = dataclasses.field(default_factory=DHNDataConfig)
    steps: PositiveInt = 100_000
    lr: Positive = 3e-4
    lr_gamma: Annotated[float, Range(gt=0, le=1)] = 0.95
    lr_every: PositiveInt = 20_000
    grad_clip: Positive = 5.0
    focal_gamma: NonNegative = 2.0
    loss_scale: Positive = 10.0
    #: 1 = DeepMOT's per-matrix class weights; 0 = both classes weigh 0.5; between: a mix
    class_balance: Fraction = 1.0
    #: curriculum: [[from_step, max_size], ...] (sorted); empty = always data.max_size
    curriculum: list[list[NonNegativeInt]] = dataclasses.field(default_factory=list)
    log_every: PositiveInt = 50
    val_every: PositiveInt = 1000
    val_count: PositiveInt = 1000
    val_seed: NonNegativeInt = 20240
    val_threshold: Fraction = 0.5
    checkpoint_every: PositiveInt = 200
    #: weights to start from (fine-tuning; a dhn.pt or checkpoint with the same model config); "" = fresh
    init: str = ""
    #: share of batches from real-geometry matrices (:mod:`deepmot.dhn.tracking_data`); 0 = random only
    tracking_share: Fraction = 0.0
    #: MOT-format dataset whose train split feeds them; "" = the built-in synthetic set (seed 0)
    tracking_data: str = ""
    #: share of jittered-GT matrices among them (the rest: detections and lagged GT)
    tracking_jitter_share: Fraction = 0.3
    #: whole-frame matrices of synthetic seed 1's train split added to validation (0 = none);
    #: the score is then the mean of the random score and their row-wise exact rate
    tracking_val_count: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_balance <= 1.0:
            raise ConfigError(f"class_balance must be in [0, 1], got {self.class_balance}")
        if not 0.0 <= self.tracking_share <= 1.0:
            raise ConfigError(f"tracking_share must be in [0, 1], got {self.tracking_share}")
        for pair in self.curriculum:
            if len(pair) != 2 or pair[1] < 1:
                raise ConfigError(f"curriculum entries must be [from_step, max_size >= 1], got {pair}")


def weighted_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, scale: float = 10.0,
                        balance: float = 1.0) -> Tensor:
    """DeepMOT's weighted binary focal loss on ``(B, N, M)`` logits and 0/1 targets -> scalar.

    Per matrix ``w0 = n1 / n`` weighs the zeros and ``w1 = 1 - w0`` the ones (``n1`` = ones in the
    target, ``n = N * M``); ``loss = scale * mean(-(w1 y (1-p)^g log p + w0 (1-y) p^g log(1-p)))``
    with ``p = sigmoid(logits)`` (log-probabilities computed stably from the logits).
    ``balance`` < 1 mixes those weights with equal ones: ``w0 <- balance * w0 + (1 - balance) / 2``.
    """
    if logits.numel() == 0:
        return logits.sum()
    y = target.to(logits.dtype)
    b = y.shape[0]
    n1 = y.reshape(b, -1).sum(1)
    n = y[0].numel()
    w0 = n1 / n
    w0 = torch.where(n1 == 0, torch.ones_like(w0), torch.where(n1 == n, torch.zeros_like(w0), w0))
    w0 = w0.view(b, 1, 1)  # edge cases as in DeepMOT: no ones -> zeros weigh 1; all ones -> 0
    w0 = balance * w0 + (1.0 - balance) * 0.5
    w1 = 1.0 - w0
    p = torch.sigmoid(logits)
    pos = w1 * y * (1 - p).pow(gamma) * F.logsigmoid(logits)
    neg = w0 * (1 - y) * p.pow(gamma) * F.logsigmoid(-logits)
    return -scale * (pos + neg).mean()


def step_lr(cfg: DHNTrainConfig, step: int) -> float:
    """Learning rate at ``step``: ``lr * lr_gamma ** (step // lr_every)`` (from the initial rate)."""
    return cfg.lr * cfg.lr_gamma ** (step // max(cfg.lr_every, 1))


def _max_size_at(cfg: DHNTrainConfig):
    plan = sorted((int(s), int(m)) for s, m in cfg.curriculum)

    def at(index: int) -> int:
        size = cfg.data.max_size
        for start, m in plan:
            if index >= start:
                size = m
        return min(size, cfg.data.max_size)

    return at if plan else None


def _flat_metrics(results: dict, prefix: str = "val") -> dict[str, float]:
    out = {}
    for method, buckets in results.items():
        for bucket, r in buckets.items():
            for key in ("wa", "precision", "recall", "f1", "exact"):
                out[f"{prefix}/{method}/{bucket}/{key}"] = r[key]
    return out


def _score(results: dict) -> float:
    """Model selection: mean row-wise exact-assignment rate over the size buckets present."""
    rows = results["dhn_row"]
    vals = [rows[b]["exact"] for b in BUCKET_NAMES if b in rows]
    return sum(vals) / max(len(vals), 1)


def train_dhn(cfg: DHNTrainConfig, resume: str | os.PathLike | None = None) -> Path:
    """Train a DHN with ``cfg`` (or continue the run directory ``resume``); returns the run dir."""
    info = init_distributed(cfg.device)
    world, rank, device, distributed = info.world, info.rank, info.device, info.distributed
    torch.set_num_threads(max(1, cfg.num_threads))
    seed_everything(cfg.seed + rank)

    run = Run.create(cfg.name, cfg, resume=resume, device=device)
    try:
        _train(cfg, run, device, resume, distributed, rank, world)
    finally:
        run.close()
    return run.dir


def _train(cfg: DHNTrainConfig, run: Run, device: torch.device, resume: str | os.PathLike | None,
           distributed: bool, rank: int, world: int) -> None:
    log = run.logger
    model = DeepHungarianNet.from_config(cfg.model)
    model.reset_parameters_deepmot()
    if cfg.init and resume is None:
        model.load_state_dict(DeepHungarianNet.pretrained(cfg.init).state_dict())
    model.to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
    step, best = 0, -math.inf
    if resume is not None:
        ckpt, ckpt_path = resume_training(run.dir, model, opt, map_location=device, required=True,
                                          log=run.logger.warning)
        step, best = int(ckpt["step"]), float(ckpt["best_score"])
        log.info("resumed from %s at step %d (best score %.3f %%)", ckpt_path, step, 100 * best)
        if run.main:  # the config in force from now on (``--set`` overrides included)
            save_config(cfg, run.dir / "config.yaml")
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    val_set = heldout_set(cfg.val_seed, cfg.val_count, cfg.data.max_size, cfg.data) if run.main else []
    pool = (TrackingPool.from_dataset(dataset_root(cfg.tracking_data or None), "train", cfg.tracking_jitter_share)
            if cfg.tracking_share > 0 else None)
    track_val = (TrackingPool.from_dataset(dataset_root(None, seed=1), "train").heldout(cfg.val_seed, cfg.tracking_val_count)
                 if run.main and cfg.tracking_val_count > 0 else [])
    n_params = sum(p.numel() for p in model.parameters())
    log.info("DHN %s, %d parameters, world size %d, steps %d -> %d", config_to_dict(cfg.model),
             n_params, world, step, cfg.steps)

    def save(name: str) -> None:
        state = training_state(model, opt, step=step, best_score=best, config=config_to_dict(cfg),
                               model_config=config_to_dict(cfg.model))
        save_checkpoint(run.checkpoint_dir / name, state)
        run.wrote(run.checkpoint_dir / name, "checkpoint")

    def validate() -> None:
        nonlocal best
        t0 = time.time()
        results = evaluate_model(model, val_set, cfg.val_threshold)
        score = _score(results)
        extra = {}
        if track_val:
            exact = evaluate_model(model, track_val, cfg.val_threshold)["dhn_row"]["all"]["exact"]
            extra = {"val/tracking/exact": exact, "val/random/score": score}
            log.info("step %d tracking validation: %d matrices, exact %.3f %%", step, len(track_val), 100 * exact)
            score = 0.5 * (score + exact)
        run.log_scalars(step, {**_flat_metrics(results), **extra, "val/score": score})
        log.info("step %d validation (%.1fs), score %.3f %%\n%s", step, time.time() - t0, 100 * score,
                 format_table(results, cfg.val_threshold))
        if score > best:
            best = score
            save("best.pt")
            log.info("new best score %.3f %% (checkpoints/best.pt)", 100 * best)

    stream = mixed_stream(cfg.seed, rank, step, cfg.data, pool, cfg.tracking_share, _max_size_at(cfg))
    model.train()
    bar = progress(total=cfg.steps, initial=step, desc="DHN steps", unit="step")
    t_last, s_last, loss_acc, n_acc, mats = time.time(), step, 0.0, 0, 0
    guard = PreemptionGuard().install()   # SIGTERM / SIGUSR1: checkpoint, clean exit, --resume
    while step < cfg.steps:
        batch = next(stream)
        lr = step_lr(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = net(batch.input.to(device), return_logits=True)
        loss = weighted_focal_loss(logits, batch.target.to(device), cfg.focal_gamma, cfg.loss_scale,
                                   cfg.class_balance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        loss_acc += loss.item()
        n_acc += 1
        mats += batch.input.shape[0]
        if run.main and step % cfg.log_every == 0:
            dt = time.time() - t_last
            sps = (step - s_last) / dt
            run.log_scalars(step, {"train/loss": loss_acc / n_acc, "train/lr": lr,
                                   "train/steps_per_s": sps, "train/matrices_per_s": mats / dt})
            log.info("step %d loss %.4f lr %.2e %.2f steps/s %.1f matrices/s", step, loss_acc / n_acc,
                     lr, sps, mats / dt)
            t_last, s_last, loss_acc, n_acc, mats = time.time(), step, 0.0, 0, 0
        if run.main and (step % cfg.val_every == 0 or step == cfg.steps):
            validate()
            t_last, s_last, mats = time.time(), step, 0  # keep validation out of the speed
        if run.main and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save("last.pt")
        guard.check(lambda: _preempted(run, save, step), any_rank(guard.requested, device))
    guard.restore()
    bar.close()
    if distributed:
        barrier()
        cleanup_distributed()
    log.info("done at step %d, best score %.3f %%", step, 100 * best)
    if run.main:
        source = run.checkpoint_dir / ("best.pt" if (run.checkpoint_dir / "best.pt").is_file() else "last.pt")
        export_weights(source, run.dir / "dhn.pt", note=f"from {source}")
        run.wrote(run.dir / "dhn.pt", f"DHN weights (from {source.name}; use with --dhn-weights)")
        curves = plot_scalars(run.dir / "curves.png", run.dir / "metrics.csv", {
            "training loss": ["train/loss"],
            "validation, exact assignments %": ["val/score", "val/dhn_row/all/exact", "val/baseline/all/exact"]})
        if curves is not None:
            run.wrote(curves, "curves")


def _preempted(run: Run, save, step: int) -> None:
    """Preemption: rank 0 writes ``last.pt`` at ``step``; every rank leaves the process group."""
    if run.main:
        save("last.pt")
    run.logger.warning("preempted at step %d: checkpoint written, continue with --resume %s", step, run.dir)
    run.close()
    barrier()
    cleanup_distributed()


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike, note: str = "") -> dict:
    """Write the shippable form of a training checkpoint: model weights, ``model_config``, and
    how it was trained (step, training config, ``note``); no optimiser or RNG state.

    The result loads with ``torch.load(weights_only=True)`` and :meth:`DeepHungarianNet.pretrained`.
    Returns the written dict.
    """
    ckpt = load_checkpoint(checkpoint)
    state = {"model": {k: v.detach().clone().float() for k, v in ckpt["model"].items()},
             "model_config": ckpt["model_config"], "step": int(ckpt["step"]),
             "train_config": ckpt.get("config", {}), "best_score": float(ckpt.get("best_score", 0.0)),
             "note": note}
    save_checkpoint(out, state)
    os.chmod(out, 0o644)  # a package data file, readable by everyone
    return state
