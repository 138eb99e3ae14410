"""SOT pre-training of a SiamRPN on template/search pairs cut from MOT-format GT (PySOT recipe,
spec ``pysot.md`` §7), and the single-object success-rate evaluation on held-out sequences.

``python -m trackers.siamrpn.pretrain --data data/synthetic`` runs the fast default recipe (300
steps x 16 pairs, AdamW 3e-3 -> 1e-4; ~3 min on 2 idle CPU cores for ``siamrpn_alex_tiny``),
writes a run directory (config, log, metrics.csv, checkpoints) and the final weights as a bare
PySOT-style state dict (``--out``), loadable with :func:`~trackers.siamrpn.checkpoint.load_pysot_checkpoint`,
then prints the success rate on the eval split. From Python: ``pretrain(cfg) -> (model, run_dir)``
with the weights at ``cfg.out``. ``configs/siamrpn_sot_pretrain.yaml`` is the longer recipe of
the shipped :data:`SYNTHETIC_WEIGHTS`.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch

from deepmot.boxes import box_iou, xywh_to_xyxy
from deepmot.config import (ConfigError, Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, Range,
                            config_to_dict, load_config)
from deepmot.datasets.mot import gt_sequences, read_gt
from deepmot.runtime.checkpoint import (atomic_write, check_finite_state, resume_training, save_checkpoint,
                                        training_state)
from deepmot.runtime.preempt import PreemptionGuard
from deepmot.runtime.run import Run
from deepmot.runtime.seed import seed_everything
from deepmot.errors import MissingDataError
from deepmot.progress import progress

from .checkpoint import load_pysot_checkpoint
from .model import SiamRPN, build_siamrpn
from .pairs import DriftRecord, PairSampler, context_side
from .params import TrackParams
from .targets import anchor_targets, mine_hard_negatives, rpn_loss

__all__ = ["PretrainConfig", "pretrain", "evaluate_sot", "mine_drift", "main", "SYNTHETIC_WEIGHTS"]

#: Shipped ``siamrpn_alex_tiny`` weights pre-trained on the synthetic set (bare state dict;
#: how they were trained: ``weights/README.md`` next to them).
SYNTHETIC_WEIGHTS = Path(__file__).resolve().parent / "weights" / "siamrpn_alex_tiny_synthetic.pth"


@dataclass
class PretrainConfig:
    """Options of a pre-training run (``--set key=value`` overrides any of them)."""

    model: str = "siamrpn_alex_tiny"     # config name in configs/ or a YAML path
    model_overrides: list[str] = field(default_factory=list)
    init: str | None = None              # optional starting weights (PySOT/DaSiamRPN/ours)
    data: str = "data/synthetic"         # MOT-format root holding train/ and test/
    split: str = "train"
    exclude: list[str] = field(default_factory=list)  # sequences (e.g. MOT17-11) kept out of training
    eval_split: str = "test"
    eval_sequences: list[str] = field(default_factory=list)  # evaluate only these (default: all)
    min_vis: Fraction = 0.5              # GT boxes less visible than this are not cut into pairs
    hard_negatives: Fraction = 0.0       # share of negative pairs taken from the same scene
    drift: Fraction = 0.0                # share of pairs cut where the tracker looked when it failed
    drift_track: dict = field(default_factory=lambda: {"window_influence": 0.15, "lr": 0.1})
    hard_anchors: NonNegativeInt = 0     # per pair, this many top-scoring background anchors added as negatives
    steps: PositiveInt = 300             # the fast recipe: ~3 min on 2 idle CPU cores (tiny model)
    batch_size: PositiveInt = 16
    optimizer: Literal["adam", "sgd"] = "adam"  # "adam" (AdamW) or "sgd" (momentum, PySOT's choice)
    base_lr: Positive = 0.003
    end_lr: Positive = 0.0001            # log-linear decay from base_lr to end_lr
    warmup_steps: NonNegativeInt = 20
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD momentum / Adam beta1
    weight_decay: NonNegative = 1e-4
    grad_clip: Positive = 10.0
    seed: NonNegativeInt = 0
    threads: PositiveInt = 2
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 100
    eval_max_tracks: PositiveInt | None = None  # None: every test object
    out: str = "weights/siamrpn_pretrained.pth"
    runs_root: str = "runs"

    def __post_init__(self) -> None:
        for name in ("hard_negatives", "drift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")
        if self.hard_anchors < 0:
            raise ConfigError(f"hard_anchors must be >= 0, got {self.hard_anchors}")


def _lr(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.base_lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return math.exp(math.log(cfg.base_lr) + frac * (math.log(cfg.end_lr) - math.log(cfg.base_lr)))


def pretrain(cfg: PretrainConfig, resume: str | None = None) -> tuple[SiamRPN, Path]:
    """Train; returns the model and the run directory. ``resume``: a run directory to continue."""
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = build_siamrpn(cfg.model, cfg.model_overrides)
    if cfg.init:
        load_pysot_checkpoint(model, cfg.init)
    mcfg = model.cfg
    sampler = PairSampler(cfg.data, mcfg, cfg.split, min_vis=cfg.min_vis, exclude=cfg.exclude,
                          hard_negatives=cfg.hard_negatives)
    opt = _optimizer(cfg, model)
    run = Run.create("siamrpn_pretrain", cfg, root=cfg.runs_root, resume=resume, device="cpu")
    try:
        return _train(cfg, resume, run, model, sampler, opt)
    finally:
        run.close()


def _train(cfg: PretrainConfig, resume: str | None, run: Run, model: SiamRPN, sampler: PairSampler,
           opt: torch.optim.Optimizer) -> tuple[SiamRPN, Path]:
    mcfg = model.cfg
    if cfg.drift > 0:  # mined with the starting weights, before a resume loads its checkpoint
        t = time.time()
        records = mine_drift(model, cfg.data, cfg.split, TrackParams.from_config(mcfg, **cfg.drift_track),
                             exclude=cfg.exclude)
        kept = sampler.add_drift(records, cfg.drift)
        run.logger.info("%d tracker failures kept of %d mined in %.0fs (drift share %s)",
                        kept, len(records), time.time() - t, cfg.drift)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    resumed = resume_training(run.dir, model, opt, log=run.logger.warning) if resume else None
    if resumed is not None:
        ck, ckpt_path = resumed
        start = int(ck["step"])
        rng.bit_generator.state = _np_state_from(ck["sampler_rng"])
        gen.set_state(ck["generator"])
        run.logger.info("resumed at step %d from %s", start, ckpt_path)
    run.logger.info("model %s (%d parameters), %d training tracks in %d sequences",
                    mcfg.name, sum(p.numel() for p in model.parameters()), len(sampler.tracks),
                    len(sampler.sequences))
    model.train()
    t0 = time.time()
    t_data = 0.0

    def save(done: int) -> None:
        save_checkpoint(run.checkpoint_dir / "last.pt", training_state(
            model, opt, step=done, sampler_rng=_np_state_to(rng.bit_generator.state),
            generator=gen.get_state(), config=config_to_dict(cfg), model_config=config_to_dict(mcfg)))
        run.wrote(run.checkpoint_dir / "last.pt", "checkpoint")

    def preempted(done: int) -> None:
        save(done)
        run.logger.warning("preempted at step %d: checkpoint written, continue with --resume %s", done, run.dir)
        run.close()

    guard = PreemptionGuard().install()   # SIGTERM / SIGUSR1: checkpoint, clean exit, --resume
    for step in progress(range(start, cfg.steps), total=cfg.steps, initial=start, desc="SOT pre-training",
                         unit="step"):
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        td = time.perf_counter()
        batch = sampler.sample(cfg.batch_size, rng)
        targets = anchor_targets(batch.target, batch.positive, mcfg, gen)
        t_data += time.perf_counter() - td
        cls, loc = model(batch.template, batch.search)
        targets = mine_hard_negatives(cls, targets, batch.target, batch.positive, mcfg,
                                      cfg.hard_anchors)
        loss, cls_loss, loc_loss = rpn_loss(cls, loc, targets, mcfg.train.cls_weight,
                                            mcfg.train.loc_weight)
        opt.zero_grad()
        if torch.isfinite(loss) and loss.item() < 1e4:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            run.log_scalars(step + 1, {"loss": loss.item(), "cls_loss": cls_loss.item(),
                                       "loc_loss": loc_loss.item(), "lr": opt.param_groups[0]["lr"]})
            done = step + 1 - start
            run.logger.info("step %d/%d loss %.4f (cls %.4f loc %.4f) %.2fs/step (data %.2fs)",
                            step + 1, cfg.steps, loss.item(), cls_loss.item(), loc_loss.item(),
                            (time.time() - t0) / done, t_data / done)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save(step + 1)
        guard.check(lambda: preempted(step + 1))
    guard.restore()
    out = Path(cfg.out)
    check_finite_state(model.state_dict(), f"{out} not written (did the training diverge?)")
    atomic_write(out, lambda f: torch.save(model.state_dict(), f))
    run.wrote(out, "SOT weights")
    return model.eval(), run.dir


def _optimizer(cfg: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.base_lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(model.parameters(), lr=cfg.base_lr, betas=(cfg.momentum, 0.999),
                                 weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adam'")


def _np_state_to(state: dict) -> dict:
    s = state["state"]
    return {"bit_generator": state["bit_generator"], "state": int(s["state"]).to_bytes(16, "little"),
            "inc": int(s["inc"]).to_bytes(16, "little"), "has_uint32": state["has_uint32"],
            "uinteger": state["uinteger"]}


def _np_state_from(d: dict) -> dict:
    return {"bit_generator": d["bit_generator"],
            "state": {"state": int.from_bytes(d["state"], "little"),
                      "inc": int.from_bytes(d["inc"], "little")},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}


@torch.no_grad()
def evaluate_sot(model: SiamRPN, root: str | Path, split: str = "test", iou_threshold: float = 0.5,
                 max_tracks: int | None = None, sequences: list[str] | None = None,
                 per_sequence: dict[str, dict[str, float]] | None = None,
                 params: TrackParams | None = None) -> dict[str, float]:
    """Single-object success rate: every scored GT object (class 1, flag 1) of ``root/split``
    (one variant per sequence) is tracked alone from its first GT box until its last GT frame;
    success = share of its later GT frames where the tracked box has IoU > ``iou_threshold``.
    Objects run side by side in one batched tracker (independent templates and states).
    ``sequences``: only these base names (e.g. ``MOT17-11``). ``per_sequence``: a dict filled with
    the same numbers per sequence. ``params``: tracking hyper-parameters (default: the model's
    config). Returns ``{"success", "frames", "tracks", "mean_iou"}``."""
    model.eval()
    totals = np.zeros(4)                     # hits, frames, tracks, sum of IoU
    for base, info in progress(list(gt_sequences(root, split, only=sequences)), desc=f"SOT evaluation ({split})",
                               unit="seq"):
        left = None if max_tracks is None else max(0, max_tracks - int(totals[2]))
        counts = _track_sequence(model, info, iou_threshold, left, params)
        totals += counts
        if per_sequence is not None and counts[2] > 0:
            per_sequence[base] = _summary(counts)
    return _summary(totals)


@torch.no_grad()
def mine_drift(model: SiamRPN, root: str | Path, split: str = "train", params: TrackParams | None = None,
               iou_threshold: float = 0.5, exclude: list[str] | tuple[str, ...] = ()) -> list[DriftRecord]:
    """Tracking in the loop: track every scored object of ``root/split`` alone, as
    :func:`evaluate_sot` does, and return a :class:`DriftRecord` (the tracker's state before the
    frame) for each frame where the box has IoU <= ``iou_threshold`` with the GT while the GT
    centre is still inside the search window, i.e. where the network picked something else."""
    out: list[DriftRecord] = []
    for base, info in progress(list(gt_sequences(root, split, exclude)), desc="drift mining", unit="seq"):
        _track_sequence(model, info, iou_threshold, None, params, record=(base, out))
    return out


def _summary(counts: np.ndarray) -> dict[str, float]:
    hits, frames, tracks, iou_sum = (float(c) for c in counts)
    return {"success": hits / max(frames, 1.0), "frames": frames, "tracks": tracks,
            "mean_iou": iou_sum / max(frames, 1.0)}


def _track_sequence(model: SiamRPN, info, iou_threshold: float, max_tracks: int | None,
                    params: TrackParams | None = None,
                    record: tuple[str, list[DriftRecord]] | None = None) -> np.ndarray:
    """Track the first ``max_tracks`` scored objects of one sequence; ``[hits, frames, tracks, sum IoU]``.
    ``record = (name, list)``: failures are appended to the list (see :func:`mine_drift`)."""
    from .tracker import BatchedSiamRPNTracker  # the tracking procedure (another module's job)
    import cv2

    counts = np.zeros(4)
    rows = read_gt(info.gt_path, info.seq_length)
    rows = rows.select((rows.cls == 1) & (rows.conf == 1))
    ids = np.unique(rows.id)[:max_tracks]
    if len(ids) == 0:
        return counts
    first = {int(i): int(rows.frame[rows.id == i].min()) for i in ids}
    last = {int(i): int(rows.frame[rows.id == i].max()) for i in ids}
    tracker = BatchedSiamRPNTracker(model, params)
    for f in range(min(first.values()), max(last.values()) + 1):
        img = cv2.imread(str(info.image_path(f)), cv2.IMREAD_COLOR)
        if img is None:
            raise MissingDataError("image missing or unreadable", info.image_path(f))
        sel = rows.frame == f
        gt = {int(i): rows.xywh[sel][k] for k, i in enumerate(rows.id[sel]) if int(i) in first}
        gone = [i for i in tracker.ids if last[i] < f]
        if gone:
            tracker.remove(gone)
        if len(tracker):
            before = torch.cat([tracker.state.center, tracker.state.size], dim=1)
            res = tracker.track(img)
            for k, (i, box) in enumerate(zip(res.ids, res.bbox)):
                if i in gt:
                    g = torch.as_tensor(gt[i], dtype=torch.float64).clone()
                    g[:2] -= 1.0  # file is 1-based; the tracker works 0-based
                    iou = float(box_iou(xywh_to_xyxy(box[None]), xywh_to_xyxy(g[None]))[0, 0])
                    counts += (iou > iou_threshold, 1, 0, iou)
                    if record is not None and iou <= iou_threshold:
                        view = before[k].numpy()
                        s_x = context_side(view[2], view[3], tracker.params.context_amount) \
                            * tracker.params.instance_size / tracker.params.exemplar_size
                        gc = g[:2].numpy() + (g[2:].numpy() - 1) / 2
                        if (np.abs(gc - view[:2]) < s_x / 2).all():
                            record[1].append(DriftRecord(record[0], i, f, tuple(float(v) for v in view)))
        new = [i for i in gt if first[i] == f]
        if new:
            boxes = np.stack([gt[i] for i in new]).astype(np.float64)
            boxes[:, :2] -= 1.0
            tracker.add(img, boxes, ids=new)
            counts[2] += len(new)
    return counts


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trackers.siamrpn.pretrain",
                                 description="SOT pre-training of a SiamRPN on MOT-format GT "
                                             "(template/search pairs), then success-rate evaluation.")
    ap.add_argument("--config", help="YAML file of PretrainConfig options")
    ap.add_argument("--model", help="SiamRPN config name in configs/ or YAML path "
                                    "(default: siamrpn_alex_tiny)")
    ap.add_argument("--data", help="MOT-format dataset root with train/ and test/ "
                                   "(default: data/synthetic)")
    ap.add_argument("--steps", type=int, help="training steps (default: 300)")
    ap.add_argument("--batch-size", type=int, help="pairs per step (default: 16)")
    ap.add_argument("--out", help="where to write the final weights (bare state dict)")
    ap.add_argument("--init", help="starting weights (PySOT/DaSiamRPN/ours)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any PretrainConfig option (repeatable)")
    ap.add_argument("--resume", help="run directory to continue from its last checkpoint")
    ap.add_argument("--eval-only", metavar="WEIGHTS",
                    help="skip training: evaluate these weights on the eval split")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = _parser()
    args = ap.parse_args(argv)
    overrides = list(args.set)
    for key, val in (("model", args.model), ("data", args.data), ("steps", args.steps),
                     ("batch_size", args.batch_size), ("out", args.out), ("init", args.init),
                     ("seed", args.seed)):
        if val is not None:
            overrides.append(f"{key}={val}")
    try:
        cfg = load_config(PretrainConfig, args.config, overrides)
    except ConfigError as e:  # a bad config file or --set value: one line, exit 2
        ap.error(str(e))
    if args.eval_only:
        torch.set_num_threads(cfg.threads)
        model = build_siamrpn(cfg.model, cfg.model_overrides)
        load_pysot_checkpoint(model, args.eval_only)
    else:
        model, _ = pretrain(cfg, resume=args.resume)
        if args.no_eval:
            return 0
    t = time.time()
    per_seq: dict[str, dict[str, float]] = {}
    res = evaluate_sot(model, cfg.data, cfg.eval_split, max_tracks=cfg.eval_max_tracks,
                       sequences=cfg.eval_sequences or None, per_sequence=per_seq)
    for name, r in per_seq.items():
        print(f"  {name}: success {100 * r['success']:.3f} % mean IoU {100 * r['mean_iou']:.3f} % "
              f"({int(r['tracks'])} objects, {int(r['frames'])} frames)")
    print(f"SOT success@0.5 on {cfg.data}/{cfg.eval_split}: {100 * res['success']:.3f} % "
          f"(mean IoU {100 * res['mean_iou']:.3f} %, {int(res['tracks'])} objects, {int(res['frames'])} "
          f"frames, {time.time() - t:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
