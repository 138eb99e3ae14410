"""Benchmarks of the DeepMOT criterion (prints tables; numbers go to BENCHMARKS.md).

1. ``timing``: the vectorised :class:`deepmot.criterion.DeepMOTLoss` against a straightforward
   per-object loop implementation of the same maths, at 10x10 and 50x50, with a cheap smooth
   stand-in instead of the DHN (so only the criterion is timed). Checks the values are equal.
2. ``correlation``: trackers of controlled quality (box noise, dropped boxes, identity swaps,
   false positives) on random GT trajectories; sequence-level dMOTA from the DHN vs. true MOTA
   from py-motmetrics (IoU >= 0.5). Prints Spearman/Pearson correlations and saves a scatter
   plot. ``--dhn PATH`` (default: the shipped ``DeepHungarianNet.pretrained()``), or
   ``--dhn hungarian`` for the exact 0/1 gated matching as an upper-bound reference.
3. ``assignment``: the whole criterion, forward and forward + backward, with each soft
   assignment (the DHN, ``--dhn`` or the shipped weights; the log-domain Sinkhorn at its default
   and a few other iteration counts) and gate, at 10 and 30 targets, float32 as in training.
   Agreement with the exact matching on real training frames is ``bench/learning_signal.py``.

    python bench/criterion.py [--part timing|correlation|assignment|all] [--dhn PATH|hungarian]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmot.boxes import box_iou, deepmot_distance, forbidden_mask, gate_distance  # noqa: E402
from deepmot.criterion import DeepMOTLoss, IdentityMemory  # noqa: E402
from deepmot.matching.linear import gated_linear_assignment  # noqa: E402

IMAGE = (1920.0, 1080.0)


def smooth_dhn(d: torch.Tensor) -> torch.Tensor:
    """Cheap DHN stand-in ``(B, N, M) -> (B, N, M)`` used for timing."""
    return torch.sigmoid(6.0 * (0.6 - d))


# ------------------------------------------------------------------ 1. timing
def loop_criterion(dhn, tr, tids, gt, gids, memory: dict, thr=0.5, delta=0.5, temp=10.0,
                   w_ids=1.0, w_motp=5.0):
    """Per-track / per-object loop version of DeepMOTLoss (paper IDS); returns (values, tp, memory)."""
    n, m = tr.shape[0], gt.shape[0]
    d = deepmot_distance(tr, gt, IMAGE)
    forb = forbidden_mask(box_iou(tr.detach(), gt), thr)
    a = dhn(gate_distance(d, forb)[None])[0]
    dl = torch.tensor([delta * temp], dtype=d.dtype)
    fp = d.new_zeros(())
    for i in range(n):
        fp = fp + torch.softmax(torch.cat((a[i] * temp, dl)), 0)[-1]
    fn, ids = d.new_zeros(()), d.new_zeros(())
    tp = torch.zeros(n, m, dtype=torch.bool)
    used_rows: set[int] = set()
    for j in range(m):
        col = torch.softmax(torch.cat((a[:, j] * temp, dl)), 0)
        fn = fn + col[-1]
        g = int(gids[j])
        if g in memory:
            rows = [i for i in range(n) if int(tids[i]) == memory[g]]
            ids = ids + (col[:-1].sum() - col[rows[0]] if rows else col[:-1].sum())
            if rows and not forb[rows[0], j] and rows[0] not in used_rows:
                tp[rows[0], j] = True
                used_rows.add(rows[0])
    used_cols = {j for j in range(m) if tp[:, j].any()}
    blocked = forb.clone()
    for i in range(n):
        for j in range(m):
            if i in used_rows or j in used_cols:
                blocked[i, j] = True
    r, c = gated_linear_assignment(d.detach().numpy(), blocked.numpy())
    for i, j in zip(r, c):
        tp[i, j] = True
    new_mem = dict(memory)
    motp_sum, k = d.new_zeros(()), 0
    for i in range(n):
        for j in range(m):
            if tp[i, j]:
                new_mem[int(gids[j])] = int(tids[i])
                motp_sum, k = motp_sum + d[i, j], k + 1
    dmota = (fp + fn + w_ids * ids) / m
    dmotp = motp_sum / k if k else d.new_zeros(())
    return (dmota + w_motp * dmotp, fp, fn, ids, dmotp), tp, new_mem


def timing_frame(size: int, seed: int):
    """``size`` GT boxes, ``size`` noisy tracks (some swapped ids) and a half-full memory."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(size, 2, generator=g, dtype=torch.float64) * torch.tensor([1500.0, 800.0]) + 100
    s = torch.rand(size, 2, generator=g, dtype=torch.float64) * 60 + 40
    gt = torch.cat((c - s / 2, c + s / 2), 1)
    tr = gt + torch.randn(size, 4, generator=g, dtype=torch.float64) * 5
    tids = torch.arange(size) + 100
    gids = torch.arange(size)
    known = gids[: size // 2]
    prev = tids[torch.randperm(size, generator=g)[: size // 2]]
    return tr, tids, gt, gids, {int(a): int(b) for a, b in zip(known, prev)}


def best_of(fn, reps: int) -> float:
    """Best (minimum) wall time of ``fn()`` in ms over ``reps`` runs (robust on a shared CPU)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def best_cpu(fn, reps: int) -> float:
    """Best (minimum) process CPU time of ``fn()`` in ms over ``reps`` runs (steadier than wall
    time when other jobs share the cores; with one torch thread it is the single-core time)."""
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1e3 * min(times)


def run_timing() -> None:
    """Print the vectorised-vs-loop table (forward, and forward+backward)."""
    crit = DeepMOTLoss(smooth_dhn)
    print("\nDeepMOT criterion timing (CPU, 1 thread, float64, DHN replaced by a sigmoid; best-of-N ms)")
    print(f"{'size':>7} {'pass':>9} {'vectorised ms':>14} {'loop ms':>9} {'speedup':>8} {'max |diff|':>11} {'same TP/memory':>15}")
    for size, reps in [(10, 100), (50, 20)]:
        tr, tids, gt, gids, mem = timing_frame(size, seed=size)
        memory = IdentityMemory().update(torch.tensor(list(mem)), torch.tensor(list(mem.values())))
        out = crit(tr, tids, gt, gids, IMAGE, memory)
        vals, tp, new_mem = loop_criterion(smooth_dhn, tr, tids, gt, gids, mem)
        ours = (out.loss, out.fp, out.fn, out.ids, out.dmotp)
        diff = max(abs(a.item() - b.item()) for a, b in zip(ours, vals))
        same = bool(torch.equal(tp, out.tp_mask)) and new_mem == out.memory.as_dict()

        def fwd_v(bwd=False):
            x = tr.clone().requires_grad_(bwd)
            o = crit(x, tids, gt, gids, IMAGE, memory)
            if bwd:
                o.loss.backward()

        def fwd_l(bwd=False):
            x = tr.clone().requires_grad_(bwd)
            o = loop_criterion(smooth_dhn, x, tids, gt, gids, mem)[0][0]
            if bwd:
                o.backward()

        for name, bwd in [("fwd", False), ("fwd+bwd", True)]:
            tv = best_of(lambda: fwd_v(bwd), reps)
            tl = best_of(lambda: fwd_l(bwd), reps)
            print(f"{size}x{size:<4} {name:>9} {tv:14.2f} {tl:9.2f} {tl / tv:7.1f}x {diff:11.1e} {str(same):>15}")


# ------------------------------------------------------------------ 2. correlation
def gt_sequence(rng: np.random.Generator, n_frames: int = 40, n_obj: int = 8):
    """Random GT trajectories: list over frames of ``(boxes (M, 4) xyxy, ids (M,))``."""
    start = rng.integers(0, n_frames // 2, n_obj)
    end = np.minimum(start + rng.integers(n_frames // 3, n_frames, n_obj), n_frames)
    pos = rng.uniform([200, 200], [1700, 880], (n_obj, 2))
    vel = rng.normal(0, 8, (n_obj, 2))
    size = rng.uniform([40, 90], [90, 220], (n_obj, 2))
    frames = []
    for t in range(n_frames):
        alive = [k for k in range(n_obj) if start[k] <= t < end[k]]
        c = pos[alive] + vel[alive] * t
        boxes = np.concatenate((c - size[alive] / 2, c + size[alive] / 2), 1).reshape(-1, 4)
        frames.append((boxes, np.array(alive, dtype=np.int64)))
    return frames


def tracker_output(rng: np.random.Generator, frames, noise: float, drop: float, swap: float, fp: float):
    """A tracker of controlled quality on GT ``frames``: per-frame ``(boxes (N, 4), ids (N,))``.

    ``noise``: box jitter as a fraction of the box size; ``drop``: probability a box is missing;
    ``swap``: per-frame probability that two objects exchange track ids; ``fp``: mean number of
    false-positive boxes per frame.
    """
    owner: dict[int, int] = {}
    next_id = 10_000
    out = []
    for boxes, ids in frames:
        for k in ids:
            owner.setdefault(int(k), int(k))
        if len(ids) >= 2 and rng.random() < swap:
            a, b = rng.choice(ids, 2, replace=False)
            owner[int(a)], owner[int(b)] = owner[int(b)], owner[int(a)]
        keep = rng.random(len(ids)) >= drop
        wh = boxes[:, 2:] - boxes[:, :2]
        jitter = rng.normal(0, noise, (len(ids), 4)) * np.tile(wh, 2)
        tb = (boxes + jitter)[keep]
        ti = [owner[int(k)] for k in ids[keep]]
        n_fp = rng.poisson(fp)
        c = rng.uniform([100, 100], [1800, 980], (n_fp, 2))
        s = rng.uniform([40, 90], [90, 220], (n_fp, 2))
        tb = np.concatenate((tb, np.concatenate((c - s / 2, c + s / 2), 1)))
        ti = ti + list(range(next_id, next_id + n_fp))
        next_id += n_fp
        out.append((tb.reshape(-1, 4), np.array(ti, dtype=np.int64)))
    return out


def true_mota(frames, tracks) -> float:
    """py-motmetrics MOTA with 1 - IoU distances, IoU >= 0.5 required."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for (gb, gi), (tb, ti) in zip(frames, tracks):
        iou = box_iou(torch.from_numpy(gb), torch.from_numpy(tb)).numpy()
        acc.update(gi, ti, np.where(iou >= 0.5, 1 - iou, np.nan))
    return float(mm.metrics.create().compute(acc, metrics=["mota"], return_dataframe=False)["mota"])


def sequence_dmota(crit: DeepMOTLoss, frames, tracks) -> tuple[float, float]:
    """Sequence-level dMOTA ``1 - sum(FP~ + FN~ + IDS~) / sum(M)`` and the mean per-frame dMOTA."""
    mem, err, n_gt, per_frame = IdentityMemory(), 0.0, 0, []
    with torch.no_grad():
        for (gb, gi), (tb, ti) in zip(frames, tracks):
            o = crit(torch.from_numpy(tb).float(), ti, torch.from_numpy(gb).float(), gi, IMAGE, mem)
            mem = o.memory
            err += (o.fp + o.fn + crit.w_ids * o.ids).item()
            n_gt += len(gi)
            if len(gi):
                per_frame.append(1.0 - o.dmota.item())
    return 1.0 - err / max(n_gt, 1), float(np.mean(per_frame))


class HungarianDHN:
    """Exact stand-in: 0/1 gated min-cost max-cardinality matching of the gated distance."""

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(d)
        r, c = gated_linear_assignment(d[0].detach().cpu().double().numpy(), (d[0] >= 1.0).cpu().numpy())
        out[0, torch.from_numpy(r), torch.from_numpy(c)] = 1.0
        return out


def load_dhn(spec: str | None):
    """``None`` -> shipped pretrained DHN; ``"hungarian"`` -> exact stand-in; else a weights path."""
    if spec == "hungarian":
        return HungarianDHN()
    from deepmot.dhn.model import DeepHungarianNet

    try:
        return DeepHungarianNet.pretrained(spec)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise SystemExit(f"correlation study needs DHN weights: {err}. Train them "
                         f"(python train.py --dhn) or pass --dhn PATH / --dhn hungarian.")


def run_correlation(dhn_spec: str | None, n_trackers: int, seed: int, plot: Path) -> None:
    """Print correlations of sequence dMOTA with motmetrics MOTA; save the scatter plot."""
    from scipy.stats import pearsonr, spearmanr

    dhn = load_dhn(dhn_spec)
    crit = DeepMOTLoss(dhn)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_trackers):
        frames = gt_sequence(rng)
        q = dict(noise=rng.uniform(0, 0.25), drop=rng.uniform(0, 0.5), swap=rng.uniform(0, 0.3),
                 fp=rng.uniform(0, 4))
        tracks = tracker_output(rng, frames, **q)
        rows.append((true_mota(frames, tracks), *sequence_dmota(crit, frames, tracks)))
    r = np.array(rows)
    name = dhn_spec or "pretrained"
    print(f"\nCorrelation of dMOTA ({name} DHN, delta={crit.delta}, s={crit.temperature}) with "
          f"motmetrics MOTA over {n_trackers} synthetic trackers (seed {seed})")
    print(f"{'dMOTA':>22} {'Spearman':>9} {'Pearson':>8}")
    for j, label in [(1, "sequence (sum / sum M)"), (2, "mean per-frame")]:
        print(f"{label:>22} {spearmanr(r[:, 0], r[:, j])[0]:9.3f} {pearsonr(r[:, 0], r[:, j])[0]:8.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(r[:, 0], r[:, 1], s=12)
    lo = min(r[:, 0].min(), r[:, 1].min())
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax.set_xlabel("MOTA (py-motmetrics, IoU >= 0.5)")
    ax.set_ylabel(f"sequence dMOTA ({name} DHN)")
    ax.set_title(f"Spearman {spearmanr(r[:, 0], r[:, 1])[0]:.3f}, {n_trackers} trackers")
    plot.parent.mkdir(parents=True, exist_ok=True)
    tmp = plot.with_name(plot.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(plot)
    print(f"scatter plot: {plot}")


# ------------------------------------------------------------------ 3. assignment variants
def run_assignment(dhn_spec: str | None, sizes=(10, 30)) -> None:
    """Print forward and forward + backward times of the criterion per soft assignment and gate."""
    dhn = load_dhn(dhn_spec)
    base = dict(delta=0.7, temperature=10.0)
    variants = [("dhn", "hard", {}), ("dhn", "soft", {}),
                ("sinkhorn", "hard", {}), ("sinkhorn", "soft", {}),
                ("sinkhorn", "soft", {"sinkhorn_iters": 20}), ("sinkhorn", "soft", {"sinkhorn_iters": 100})]
    print("\nDeepMOT criterion per soft assignment (1 thread, float32, delta 0.7, s 10; best-of-N CPU ms)")
    print(f"{'size':>7} {'assignment':>10} {'gate':>5} {'iters':>5} {'fwd ms':>8} {'fwd+bwd ms':>11} {'FP~+FN~':>8}")
    for size in sizes:
        tr, tids, gt, gids, mem = timing_frame(size, seed=size)
        tr, gt = tr.float(), gt.float()
        memory = IdentityMemory().update(torch.tensor(list(mem)), torch.tensor(list(mem.values())))
        reps = 20 if size <= 10 else 8
        for assignment, gate, extra in variants:
            crit = DeepMOTLoss(dhn if assignment == "dhn" else None, assignment=assignment, gate=gate,
                               **base, **extra)

            def step(bwd: bool, crit=crit):
                x = tr.clone().requires_grad_(bwd)
                o = crit(x, tids, gt, gids, IMAGE, memory)
                if bwd:
                    o.loss.backward()
                return o

            o = step(False)
            tf, tb = best_cpu(lambda: step(False), reps), best_cpu(lambda: step(True), reps)
            iters = str(crit.sinkhorn_iters) if assignment == "sinkhorn" else "-"
            print(f"{size}x{size:<4} {assignment:>10} {gate:>5} {iters:>5} {tf:8.2f} {tb:11.2f} "
                  f"{float(o.fp + o.fn):8.3f}", flush=True)


def main() -> None:
    """Command-line entry: parse arguments and run the selected parts."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["timing", "correlation", "assignment", "all"], default="all")
    p.add_argument("--dhn", default=None, help="DHN weights path, or 'hungarian' (default: shipped)")
    p.add_argument("--trackers", type=int, default=60, help="number of synthetic trackers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=Path, default=Path("runs/bench/criterion_correlation.png"))
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.part in ("timing", "all"):
        run_timing()
    if a.part in ("correlation", "all"):
        run_correlation(a.dhn, a.trackers, a.seed, a.plot)
    if a.part in ("assignment", "all"):
        run_assignment(a.dhn)


if __name__ == "__main__":
    main()
