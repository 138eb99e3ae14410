"""The detector training loop behind ``python train.py --detector``.

SGD (or AdamW) with linear warm-up and a cosine or step schedule over ``steps`` iterations of
``batch_size`` frames drawn without replacement (a fresh permutation per epoch, from the seed);
flip and multi-scale augmentation; COCO AP on the validation frames every ``eval_every`` steps
(best kept as ``checkpoints/best.pt``); ``checkpoints/last.pt`` every ``checkpoint_every`` steps.
The run directory gets ``metrics.csv``, TensorBoard events and ``log.txt``; ``--resume`` continues
exactly (model, optimiser, schedule, step, RNG states; the batch order and the augmentation are
functions of the seed and the step). At the end the test split is scored once.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepmot.config import ConfigError, config_to_dict, load_config, save_config
from deepmot.runtime.checkpoint import load_checkpoint, resume_training, save_checkpoint, training_state
from deepmot.progress import progress
from deepmot.runtime.run import Run
from deepmot.runtime.seed import seed_everything
from trackers.detection.data import DataConfig, FrameSet, flip
from trackers.detection.evaluate import coco_metrics, detect_frames
from trackers.detection.model import ModelConfig, build_detector, load_detector_weights, model_summary

__all__ = ["DetectorTrainConfig", "train_detector", "config_from_args", "ALIASES"]

#: ``--set`` shortcuts for the box head's stage (``--set matcher=uot``).
ALIASES = {"matcher": "model.roi.matcher", "cls_loss": "model.roi.cls_loss", "box_loss": "model.roi.box_loss"}


@dataclass
class DetectorTrainConfig:
    """Everything a detector run depends on (``configs/detector_*.yaml``).

    ``data_root``: MOT-format dataset (None: data/MOT17 if present, else the built-in synthetic
    set). ``pretrained``: starting weights (a torchvision / Tracktor Faster R-CNN state dict or one
    of our checkpoints). ``lr`` is the peak learning rate after ``warmup_steps`` of linear warm-up
    from ``lr * warmup_factor``; ``schedule``: "cosine" (to 0) or "step" (x ``gamma`` at each
    fraction of ``steps`` in ``milestones``). ``grad_clip``: max gradient norm (0 = off).
    ``eval_every``: validation AP period in steps (0 = only at the end); ``test_at_end``: score the
    test split once when training ends.
    """

    name: str = "detector"
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 1
    data_root: str | None = None
    pretrained: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 3000
    batch_size: int = 2
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    warmup_factor: float = 0.001
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.67, 0.89])
    gamma: float = 0.1
    grad_clip: float = 10.0
    log_every: int = 20
    eval_every: int = 1000
    checkpoint_every: int = 250
    score_thresh: float = 0.5
    test_at_end: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps must be >= 0, batch_size >= 1 and lr > 0")


def config_from_args(config: str | None, overrides: list[str], data: str | None = None,
                     pretrained: str | None = None, name: str | None = None,
                     resume: str | None = None, repo: Path | None = None) -> DetectorTrainConfig:
    """The run's config: ``config`` (default ``configs/detector_tiny.yaml``; with ``resume`` the run's
    own ``config.yaml``), then ``--set`` overrides (with the :data:`ALIASES`), ``--data``,
    ``--pretrained`` and ``--name``. Bad values raise :class:`ConfigError` naming the file."""
    repo = repo or Path(__file__).resolve().parents[2]
    if config is None:
        config = str(Path(resume) / "config.yaml") if resume else str(repo / "configs" / "detector_tiny.yaml")
    sets = []
    for item in overrides:
        key, sep, value = item.partition("=")
        sets.append(f"{ALIASES.get(key.strip(), key.strip())}{sep}{value}")
    sets += [f"{k}={v}" for k, v in (("data_root", data), ("pretrained", pretrained), ("name", name)) if v is not None]
    try:
        return load_config(DetectorTrainConfig, config, sets)
    except ValueError as e:  # a __post_init__ check
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{config}: {e}") from None


def _lr_factor(cfg: DetectorTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        a = step / max(1, cfg.warmup_steps)
        return cfg.warmup_factor * (1 - a) + a
    if cfg.schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return cfg.gamma ** sum(step >= m * cfg.steps for m in cfg.milestones)


def _batch(cfg: DetectorTrainConfig, frames: FrameSet, step: int):
    """The frames of ``step``: a per-epoch permutation from the seed, flips from (seed, step)."""
    n = len(frames)
    per_epoch = max(1, n // cfg.batch_size)
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    rng = np.random.default_rng([cfg.seed, 1_000_003, step])
    images, targets = [], []
    for i in order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]:
        image, target = frames[int(i)]
        if rng.random() < cfg.data.flip:
            image, target = flip(image, target)
        images.append(image)
        targets.append({k: v for k, v in target.items() if k != "vis"})
    return images, targets


def validate(model, frames: FrameSet, cfg: DetectorTrainConfig, buckets: bool = False) -> dict[str, float]:
    """COCO metrics of ``model`` on ``frames`` (eval mode, the test-time image size)."""
    dets, gts = detect_frames(model, frames, progress=lambda it, desc: progress(it, desc=desc, leave=False))
    return coco_metrics(gts, dets, score_thresh=cfg.score_thresh, vis_buckets=buckets)


def _fmt(m: dict[str, float]) -> str:
    keys = ("AP", "AP50", "AP75", "recall", "precision@thr", "recall@thr")
    return ", ".join(f"{k} {100 * m[k]:.1f}" for k in keys if k in m)


def train_detector(cfg: DetectorTrainConfig, resume: str | os.PathLike | None = None) -> Path:
    """Train (or continue ``resume``, a run directory) and return the run directory."""
    from deepmot.datasets import resolve_data_root

    torch.set_num_threads(max(1, cfg.num_threads))
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    # data and starting weights first: a bad path ends the command before a run directory exists
    notes: list[str] = []
    root = resolve_data_root(cfg.data_root, log=notes.append, data_dir=Path(__file__).resolve().parents[2] / "data")
    train_set = FrameSet(root, cfg.data.split, cfg.data.train_range, 1, cfg.data.min_vis)
    val_set = FrameSet(root, cfg.data.split, cfg.data.val_range, cfg.data.val_every)
    model = build_detector(cfg.model).to(device)
    if cfg.pretrained:
        load_detector_weights(model, cfg.pretrained)
        notes.append(f"starting weights: {cfg.pretrained}")
    run = Run.create(cfg.name, cfg, resume=resume)
    log = run.logger
    for note in notes:
        log.info(note)
    log.info("data %s: %d training frames (%s), %d validation frames (%s, every %d)", root, len(train_set),
             cfg.data.train_range, len(val_set), cfg.data.val_range, cfg.data.val_every)
    log.info("%s; box head: %s; RPN: %s", model_summary(model), config_to_dict(cfg.model.roi),
             config_to_dict(cfg.model.rpn))
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s))
    step, best = 0, -1.0
    if resume is not None:
        ckpt, path = resume_training(run.dir, model, opt, map_location=device, required=True,
                                     log=run.logger.warning)
        sched.load_state_dict(ckpt["scheduler"])
        step, best = int(ckpt["step"]), float(ckpt["best_ap"])
        log.info("resumed from %s at step %d", path, step)
        save_config(cfg, run.dir / "config.yaml")

    def save(name: str) -> None:
        save_checkpoint(run.checkpoint_dir / name, training_state(
            model, opt, scheduler=sched.state_dict(), step=step, best_ap=best, config=config_to_dict(cfg),
            model_config=config_to_dict(cfg.model)))

    def evaluate_val() -> None:
        nonlocal best
        t0 = time.time()
        m = validate(model, val_set, cfg)
        run.log_scalars(step, {f"val/{k}": v for k, v in m.items()})
        log.info("step %d validation (%d frames, %.0f s): %s", step, len(val_set), time.time() - t0, _fmt(m))
        if m["AP"] > best:
            best = m["AP"]
            save("best.pt")
        model.train()

    base_min, base_max = cfg.model.min_size, cfg.model.max_size
    train_sizes = tuple(int(round(base_min * s)) for s in cfg.data.scales)
    model.train()
    bar = progress(total=cfg.steps, initial=step, desc="detector")
    t_last, n_last = time.time(), 0
    stage_time = {"rpn": 0.0, "roi": 0.0}
    while step < cfg.steps:
        images, targets = _batch(cfg, train_set, step)
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        model.transform.min_size, model.transform.max_size = train_sizes, int(base_max * max(cfg.data.scales))
        before = {s: sum(getattr(model, m).stage.timing.values()) for s, m in (("rpn", "rpn"), ("roi", "roi_heads"))}
        losses = model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"step {step}: non-finite loss {({k: float(v) for k, v in losses.items()})}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        model.transform.min_size, model.transform.max_size = (base_min,), base_max
        for s, m in (("rpn", "rpn"), ("roi", "roi_heads")):
            stage_time[s] += sum(getattr(model, m).stage.timing.values()) - before[s]
        step += 1
        n_last += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t_last
            scalars = {k: float(v.detach()) for k, v in losses.items()} | {
                "loss": float(total.detach()), "lr": opt.param_groups[0]["lr"], "s_per_iter": dt / n_last,
                "rpn_assign_loss_share": stage_time["rpn"] / dt, "roi_assign_loss_share": stage_time["roi"] / dt}
            run.log_scalars(step, scalars)
            log.info("step %d loss %.4f (%s) lr %.5f %.2f s/it, assignment+loss share rpn %.0f%% roi %.0f%%", step,
                     scalars["loss"], ", ".join(f"{k[5:]} {v:.3f}" for k, v in scalars.items()
                                                if k.startswith("loss_")),
                     scalars["lr"], scalars["s_per_iter"], 100 * scalars["rpn_assign_loss_share"],
                     100 * scalars["roi_assign_loss_share"])
            t_last, n_last, stage_time = time.time(), 0, {"rpn": 0.0, "roi": 0.0}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            evaluate_val()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save("last.pt")
    bar.close()
    if cfg.steps:
        evaluate_val()
        save("last.pt")
    if cfg.test_at_end:
        test_set = FrameSet(root, cfg.data.test_split, None, 1)
        t0 = time.time()
        m = validate(model, test_set, cfg, buckets=True)
        run.log_scalars(step, {f"test/{k}": v for k, v in m.items()})
        log.info("test split '%s' (%d frames, %.0f s, final weights): %s, AP50 by visibility: %s", cfg.data.test_split,
                 len(test_set), time.time() - t0, _fmt(m), ", ".join(
                     f"{k[5:]} {100 * v:.1f}" for k, v in m.items() if k.startswith("AP50_vis")))
        print(f"test AP {100 * m['AP']:.1f}  AP50 {100 * m['AP50']:.1f}  AP75 {100 * m['AP75']:.1f}  "
              f"recall {100 * m['recall']:.1f}  precision@{cfg.score_thresh} {100 * m['precision@thr']:.1f}  "
              f"recall@{cfg.score_thresh} {100 * m['recall@thr']:.1f}")
    run.close()
    return run.dir


def load_trained(path, device: str = "cpu"):
    """A detector from one of our checkpoints (its ``model_config`` + weights), in eval mode."""
    from deepmot.config import config_from_dict
    from deepmot.errors import DataFormatError

    try:
        ckpt = load_checkpoint(path, map_location=device)
    except ValueError as e:  # corrupt or foreign file: torch's message spans lines, keep the first
        first = str(e).splitlines()[0]
        raise DataFormatError(f"not a readable detector checkpoint ({first.split('(', 1)[-1][:200]})", path) from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt:
        raise ConfigError(f"{path}: not a detector checkpoint of train.py --detector (no 'model_config')")
    model = build_detector(config_from_dict(ModelConfig, ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()



def export_weights(src, dst) -> Path:
    """Write the shippable part of checkpoint ``src`` (weights, model and training config; no
    optimiser state) to ``dst`` atomically; :func:`load_trained` reads it. Returns ``dst``."""
    ckpt = load_checkpoint(src)
    keep = {k: ckpt[k] for k in ("model", "model_config", "config", "step") if k in ckpt}
    save_checkpoint(dst, keep)
    return Path(dst)
