"""Benchmark: the learning signal of the DeepMOT criterion on real training frames.

Runs the DeepMOT fine-tuning loop (:class:`deepmot.engine.deepmot_train.DeepMOTTrainer`, the main
job's settings from ``configs/deepmot_siamrpn_synthetic.yaml``) from the shipped tiny SOT weights on
clips of the synthetic train split, stepping the optimiser as the loop does with the configured
criterion. On every trained frame, before the backward pass, each criterion *variant* (DeepMOTLoss
keyword overrides) is evaluated on the same differentiable track boxes, and for each loss term --
dMOTA's ``FP~/M``, ``FN~/M``, ``w_ids IDS~/M``, their sum dMOTA, ``w_motp dMOTP`` and
``w_focal focal`` -- it records per track:

* ``|g|``: the norm of the term's gradient on the track's box (x1, y1, x2, y2 pixels); for the
  focal term the gradient on the track's anchor logits (it does not reach the box);
* ``pull``: ``-g . u`` with ``u`` the unit gradient of IoU(box, followed GT) on the box, i.e. how
  much a gradient-descent step moves the track onto its own object (> 0: towards it).

Tracks are bucketed by the IoU of their box with the GT object they follow (the object they were
born from or last refreshed to; ``absent`` when it is not in the frame). Per variant it also
reports how the soft assignment agrees with the exact matching: the frame rate where
``assignment > 0.5`` equals the criterion's hard TP mask (CLEAR-MOT's, with the identity memory),
and equals the gated Hungarian matching of the frame alone; and how the soft counts compare with
the hard ones (sum of ``FP~ + FN~`` against the hard ``FP + FN``, and ``IDS~`` against switches).

    python bench/learning_signal.py                                   # the default criterion only
    python bench/learning_signal.py --clips 30 --variants default gate=none gate=soft,gate_width=0.05
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmot.boxes import box_iou, forbidden_mask  # noqa: E402
from deepmot.config import load_config  # noqa: E402
from deepmot.criterion import DeepMOTLoss  # noqa: E402
from deepmot.datasets.synthetic import resolve_data_root  # noqa: E402
from deepmot.engine.clips import ClipTracks  # noqa: E402
from deepmot.engine.deepmot_train import DeepMOTTrainConfig, DeepMOTTrainer, build_dhn  # noqa: E402
from deepmot.matching.linear import gated_linear_assignment  # noqa: E402
from deepmot.runtime.distributed import DistInfo  # noqa: E402
from deepmot.runtime.run import Run  # noqa: E402
from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint  # noqa: E402
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS  # noqa: E402
from trackers.siamrpn.trainable import SiamRPNTrainable  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUCKETS = ("<0.3", "0.3-0.5", "0.5-0.7", ">0.7", "absent")
TERMS = ("FP~", "FN~", "IDS~", "dMOTA", "dMOTP", "focal")


def bucket(iou: float | None) -> str:
    """IoU bucket name of a track (None: its object is not in the frame)."""
    if iou is None:
        return "absent"
    return "<0.3" if iou < 0.3 else "0.3-0.5" if iou < 0.5 else "0.5-0.7" if iou < 0.7 else ">0.7"


def parse_variant(spec: str) -> dict:
    """``"default"`` -> {}; ``"gate=soft,gate_width=0.05"`` -> DeepMOTLoss keyword overrides."""
    if spec == "default":
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--variants: expected key=value in {spec!r}, got {part!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def iou_pull_direction(boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unit gradient of IoU(box_i, target_i) on each box ``(N, 4)`` (zero rows where IoU is flat)."""
    x = boxes.detach().double().requires_grad_(True)
    iou = box_iou(x, targets.double()).diagonal()
    (g,) = torch.autograd.grad(iou.sum(), x)
    return g / g.norm(dim=1, keepdim=True).clamp(min=1e-12)


class Recorder:
    """Per-variant accumulators: per (term, bucket) lists of |g| and pull; per-frame agreement."""

    def __init__(self):
        self.grad = defaultdict(list)      # (term, bucket) -> [|g|]
        self.pull = defaultdict(list)      # (term, bucket) -> [pull]
        self.stats = defaultdict(float)    # frames, exact_tp, exact_gated, fpfn_soft, fpfn_hard, ...
        self.row_fp = defaultdict(list)    # bucket -> [the track's own FP~ (its row's "no match" mass)]

    def add_tracks(self, term: str, buckets: list[str], g: torch.Tensor | None, u: torch.Tensor | None):
        """Record one term's per-track gradient ``g (N, ...)`` (None: no gradient at all)."""
        for i, b in enumerate(buckets):
            gi = g[i].reshape(-1) if g is not None else None
            self.grad[(term, b)].append(float(gi.norm()) if gi is not None else 0.0)
            if u is not None and b != "absent":
                self.pull[(term, b)].append(-float(gi.double() @ u[i].double()) if gi is not None else 0.0)


class SignalTrainer(DeepMOTTrainer):
    """The DeepMOT trainer, measuring every variant's gradients on each trained frame.

    The measurement runs where the loop combines the frame's loss terms (:meth:`_loss`, after the
    criterion and the tracker's auxiliary loss, before the backward pass); the clip and step output
    it needs are those whose auxiliary-loss targets the loop has just taken (``ClipTracks.targets``,
    tapped in :meth:`_start_clips`).
    """

    def setup_signal(self, variants: dict[str, DeepMOTLoss], param_grads: bool) -> None:
        """``variants``: label -> criterion evaluated on the same boxes as the training one."""
        self.variants = variants
        self.records = {k: Recorder() for k in variants}
        self.param_grads = param_grads
        self.param_norms = defaultdict(list)    # term -> per-frame norm of the parameter gradient

    def _start_clips(self, order, batch):
        clips = super()._start_clips(order, batch)
        for c in clips:
            c.targets = functools.partial(self._aux_targets, c)
        return clips

    def _aux_targets(self, c, out):
        self._current = (c, out)
        return ClipTracks.targets(c, out)

    def _loss(self, res, focal):
        self._measure(*self._current, focal)
        return super()._loss(res, focal)

    def _measure(self, c, out, focal) -> None:
        cfg = self.cfg
        image, gids, gboxes = c.frame_data
        size = (image.shape[1], image.shape[0])
        row = {g: i for i, g in enumerate(gids.tolist())}
        follow = [row.get(c.gt_of.get(t, -1), -1) for t in out.ids]
        gb = gboxes.to(out.boxes)
        ious = box_iou(out.boxes.detach(), gb) if len(gids) else None
        buckets = [bucket(float(ious[i, j]) if j >= 0 else None) for i, j in enumerate(follow)]
        target = gb[torch.tensor([max(j, 0) for j in follow], dtype=torch.long)]
        u = iou_pull_direction(out.boxes, target)
        # the focal term's gradient on the tracker's aux_input (the SiamRPN's anchor logits)
        g_focal = torch.autograd.grad(cfg.w_focal * focal, out.aux_input, retain_graph=True,
                                      allow_unused=True)[0]
        for label, crit in self.variants.items():
            rec = self.records[label]
            res = crit(out.boxes, out.ids, gb, gids, size, c.memory)
            m = max(res.num_gt, 1)
            terms = {"FP~": res.fp / m, "FN~": res.fn / m, "IDS~": crit.w_ids * res.ids / m,
                     "dMOTA": res.dmota, "dMOTP": crit.w_motp * res.dmotp}
            grads = {}
            for name in ("FP~", "FN~", "IDS~", "dMOTP"):
                y = terms[name]
                grads[name] = (torch.autograd.grad(y, out.boxes, retain_graph=True, allow_unused=True)[0]
                               if y.requires_grad else None)
                if grads[name] is None:
                    grads[name] = torch.zeros_like(out.boxes)
            # dMOTA = FP~/M + FN~/M + w_ids IDS~/M: its gradient is the sum (one backward saved)
            grads["dMOTA"] = grads["FP~"] + grads["FN~"] + grads["IDS~"]
            for name, g in grads.items():
                rec.add_tracks(name, buckets, g, u)
            rec.add_tracks("focal", buckets, g_focal, None)
            a = res.assignment.detach()
            z = torch.cat((a, a.new_full((a.shape[0], 1), crit.delta)), 1) * crit.temperature
            for b, v in zip(buckets, torch.softmax(z, 1)[:, -1].tolist()):
                rec.row_fp[b].append(v)
            self._agreement(rec, res, ious, out.ids, gids, c.memory)
            if self.param_grads and label == next(iter(self.variants)):
                for name, y in {**terms, "focal": cfg.w_focal * focal}.items():
                    gs = (torch.autograd.grad(y, self.params, retain_graph=True, allow_unused=True)
                          if y.requires_grad else [])
                    self.param_norms[name].append(math.sqrt(sum(float(x.pow(2).sum()) for x in gs
                                                                if x is not None)))

    def _agreement(self, rec: Recorder, res, ious, track_ids, gids, memory) -> None:
        """Soft assignment vs the hard TP mask / the frame's own gated Hungarian (the configured
        ``iou_threshold``, hard, whatever the variant feeds its assignment); soft vs hard counts."""
        a = res.assignment.detach().cpu() > 0.5
        tp = res.tp_mask.cpu()
        d = res.distance.detach().cpu().double()
        forb = forbidden_mask(ious.cpu(), self.cfg.iou_threshold)
        r, cidx = gated_linear_assignment(d.numpy(), forb.numpy())
        gated = torch.zeros_like(tp)
        gated[torch.from_numpy(r), torch.from_numpy(cidx)] = True
        n, m = tp.shape
        k = int(tp.sum())
        rows, cols = tp.nonzero(as_tuple=True)
        known, prev = memory.lookup(torch.as_tensor(gids).cpu().long()[cols])
        tids = torch.as_tensor(list(track_ids)).long()
        switches = int((known & (prev != tids[rows])).sum()) if rows.numel() else 0
        s = rec.stats
        s["frames"] += 1
        s["exact_tp"] += float(bool((a == tp).all()))
        s["exact_gated"] += float(bool((a.cpu() == gated).all()))
        s["fpfn_soft"] += float((res.fp + res.fn).detach())
        s["fpfn_hard"] += (n - k) + (m - k)
        s["ids_soft"] += float(res.ids.detach())
        s["ids_hard"] += switches
        s["fpfn_abs_err"] += abs(float((res.fp + res.fn).detach()) - ((n - k) + (m - k)))


def summarize(trainer: SignalTrainer, out=print) -> None:
    """Print one gradient table per variant, then the agreement table and the parameter norms."""
    for label, rec in trainer.records.items():
        out(f"\nvariant: {label}")
        out("mean |g| on the track box (focal: on its anchor logits); pull = -g.u (u: unit dIoU/dbox), "
            "mean and % of tracks with pull > 1e-9; n tracks; row FP~: the track's own soft FP")
        out(f"{'IoU bucket':<10} {'n':>5} " + " ".join(f"{t:>10}" for t in TERMS)
            + f" {'pull dMOTA':>11} {'%>0':>5} {'pull dMOTP':>11} {'%>0':>5} {'row FP~':>8}")
        for b in BUCKETS:
            n = len(rec.grad[("dMOTA", b)])
            if n == 0:
                out(f"{b:<10} {0:>5}  (no track in this bucket)")
                continue
            cells = " ".join(f"{sum(rec.grad[(t, b)]) / n:10.2e}" for t in TERMS)
            pulls = ""
            for t in ("dMOTA", "dMOTP"):
                p = rec.pull.get((t, b), [])
                pulls += (f" {sum(p) / len(p):11.2e} {100 * sum(x > 1e-9 for x in p) / len(p):5.0f}"
                          if p else f" {'-':>11} {'-':>5}")
            fp = rec.row_fp[b]
            out(f"{b:<10} {n:>5} {cells}{pulls} {sum(fp) / len(fp):8.3f}")
    out("\nassignment agreement and soft vs hard counts (summed over frames)")
    out(f"{'variant':<64} {'frames':>6} {'=TP mask':>9} {'=gated H.':>9} {'FP~+FN~':>9} {'FP+FN':>7} "
        f"{'mean|err|':>9} {'IDS~':>7} {'IDSW':>5}")
    for label, rec in trainer.records.items():
        s = rec.stats
        f = max(s["frames"], 1)
        out(f"{label[:64]:<64} {int(s['frames']):>6} {100 * s['exact_tp'] / f:8.1f}% "
            f"{100 * s['exact_gated'] / f:8.1f}% {s['fpfn_soft']:9.1f} {int(s['fpfn_hard']):>7} "
            f"{s['fpfn_abs_err'] / f:9.3f} {s['ids_soft']:7.2f} {int(s['ids_hard']):>5}")
    if trainer.param_norms:
        first = next(iter(trainer.records))
        out(f"\nnorm of each term's gradient on the trainable weights ({first}), per frame")
        out(f"{'term':<8} {'mean':>10} {'median':>10} {'frames = 0':>10}")
        for t in TERMS:
            v = sorted(trainer.param_norms[t])
            if v:
                out(f"{t:<8} {sum(v) / len(v):10.3e} {v[len(v) // 2]:10.3e} {sum(x == 0 for x in v):>10}")


def main() -> None:
    """Parse arguments, run the loop on ``--clips`` clips, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "deepmot_siamrpn_synthetic.yaml"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training config overrides")
    ap.add_argument("--clips", type=int, default=20, help="training clips to run (epoch order of the seed)")
    ap.add_argument("--variants", nargs="+", default=["default"],
                    help="criterion variants: 'default' or comma-separated DeepMOTLoss key=value overrides")
    ap.add_argument("--no-param-grads", action="store_true", help="skip the per-term weight-gradient norms")
    ap.add_argument("--data", default=None, help="MOT-format root (default: data/synthetic, generated once)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    data = resolve_data_root(args.data, log=lambda s: None)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(DeepMOTTrainConfig, args.config,
                          [f"data={data}", f"runs_root={tmp}", "eval_before=false", "eval_after=false",
                           "threads=1", "max_steps=null", *args.set])
        torch.manual_seed(cfg.seed)
        model = build_siamrpn(cfg.model, cfg.model_overrides)
        load_pysot_checkpoint(model, cfg.pretrained or str(SYNTHETIC_WEIGHTS))
        run = Run.create("bench_signal", cfg, root=tmp)
        logging.getLogger().setLevel(logging.WARNING)
        dhn = build_dhn(cfg.dhn, torch.device("cpu"))
        trainer = SignalTrainer(cfg, run, DistInfo(), data, SiamRPNTrainable(model, cfg), dhn)
        base = dict(iou_threshold=cfg.iou_threshold, delta=cfg.delta, temperature=cfg.temperature,
                    w_ids=cfg.w_ids, w_motp=cfg.w_motp, ids_mode=cfg.ids_mode)
        variants = {v: DeepMOTLoss(dhn, **{**base, **parse_variant(v)}) for v in args.variants}
        trainer.setup_signal(variants, not args.no_param_grads)
        t0 = time.time()
        from deepmot.engine.clips import epoch_order

        order = epoch_order(len(trainer.clips), cfg.seed, 0)
        n_clips = min(args.clips, len(order))
        for b in range(n_clips):
            clips = trainer._start_clips(order, b)
            while not all(c.done for c in clips):
                trainer._frame_step(clips)
        run.close()
        print(f"DeepMOT learning signal: {n_clips} clips of {cfg.seq_len} frames from {data}/"
              f"{cfg.train_split}, {trainer.step} optimiser steps (lr {cfg.lr}), start "
              f"{cfg.pretrained or SYNTHETIC_WEIGHTS.name}, {time.time() - t0:.0f} s")
        print(f"criterion: iou_threshold {cfg.iou_threshold}, delta {cfg.delta}, temperature "
              f"{cfg.temperature}, w_ids {cfg.w_ids}, w_motp {cfg.w_motp}, w_focal {cfg.w_focal}")
        summarize(trainer)


if __name__ == "__main__":
    main()
