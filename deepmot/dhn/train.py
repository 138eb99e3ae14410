"""DHN pre-training loop behind ``python train.py --dhn``.

Streams same-shape batches of random gated distance matrices (:mod:`deepmot.dhn.data`),
optimises the weighted binary focal loss of DeepMOT (class weights ``w0 = n1/n``, ``w1 = 1-w0``
per matrix, gamma 2, times ``loss_scale``; ``class_balance`` < 1 moves the weights towards equal
ones) with RMSprop and a step decay from the initial rate
(``lr0 * gamma ** (step // every)``, not compounding), validates periodically on a fixed
held-out set, and writes checkpoints (``last.pt`` and ``best.pt``) that resume exactly.
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
from deepmot.dhn.data import DHNDataConfig, batch_stream, heldout_set
from deepmot.dhn.metrics import BUCKET_NAMES, evaluate_model, format_table
from deepmot.dhn.model import DeepHungarianNet, DHNConfig
from deepmot.runtime.checkpoint import load_checkpoint, resume_training, save_checkpoint, training_state
from deepmot.runtime.distributed import any_rank, barrier, cleanup_distributed, init_distributed
from deepmot.runtime.preempt import PreemptionGuard
from deepmot.runtime.run import Run, progress
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

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_balance <= 1.0:
            raise ConfigError(f"class_balance must be in [0, 1], got {self.class_balance}")
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

    run = Run.create(cfg.name, cfg, resume=resume)
    log = run.logger
    model = DeepHungarianNet.from_config(cfg.model)
    model.reset_parameters_deepmot()
    model.to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
    step, best = 0, -math.inf
    if resume is not None:
        ckpt, ckpt_path = resume_training(run.dir, model, opt, map_location=device, required=True,
                                          log=run.logger.warning)
        step, best = int(ckpt["step"]), float(ckpt["best_score"])
        log.info("resumed from %s at step %d (best score %.4f)", ckpt_path, step, best)
        if run.main:  # the config in force from now on (``--set`` overrides included)
            save_config(cfg, run.dir / "config.yaml")
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    val_set = heldout_set(cfg.val_seed, cfg.val_count, cfg.data.max_size, cfg.data) if run.main else []
    n_params = sum(p.numel() for p in model.parameters())
    log.info("DHN %s, %d parameters, world size %d, steps %d -> %d", config_to_dict(cfg.model),
             n_params, world, step, cfg.steps)

    def save(name: str) -> None:
        state = training_state(model, opt, step=step, best_score=best, config=config_to_dict(cfg),
                               model_config=config_to_dict(cfg.model))
        save_checkpoint(run.checkpoint_dir / name, state)

    def validate() -> None:
        nonlocal best
        t0 = time.time()
        results = evaluate_model(model, val_set, cfg.val_threshold)
        score = _score(results)
        run.log_scalars(step, {**_flat_metrics(results), "val/score": score})
        log.info("step %d validation (%.1fs), score %.4f\n%s", step, time.time() - t0, score,
                 format_table(results, cfg.val_threshold))
        if score > best:
            best = score
            save("best.pt")
            log.info("new best %.4f saved", best)

    stream = batch_stream(cfg.seed, rank, start=step, cfg=cfg.data, max_size_at=_max_size_at(cfg))
    model.train()
    bar = progress(total=cfg.steps, initial=step, desc="dhn")
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
    log.info("done at step %d, best score %.4f", step, best)
    run.close()
    return run.dir


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
