"""Benchmark: bucketed vs plain ranking losses (BRS vs RS, BAP vs AP), forward + backward.

Usage: ``python bench/ranking.py [--sizes 10000 100000] [--pos 0.01] [--repeats 15] [--threads 1]
[--device cpu|cuda] [--dist ours|paper] [--clock wall|cpu]``. Prints one table: time of forward +
backward (best of ``--repeats``; wall or CPU time) for the plain and the bucketed loss, the
speed-up, and the largest gradient difference between them at the default delta (bucketing is an approximation there) and at delta = 0 (where the
bucketed gradient must equal the plain one, Thm 4.1 of Yavuz et al.).

Inputs: ``L`` logits with a fraction ``--pos`` of positives; ``--dist ours``: positives ~ N(0.5, 1),
negatives ~ N(0, 1) (the spec's reference run); ``--dist paper``: positives ~ N(-1, 1), negatives
~ N(1, 1) (the BR paper's synthetic benchmark). IoU targets of positives ~ U(0.1, 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deepmot.losses.ranking import ap_loss, rank_sort_loss  # noqa: E402


def make_inputs(n: int, pos_frac: float, dist: str, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` logits and IoU targets (``pos_frac`` positives) on ``device``."""
    g = torch.Generator().manual_seed(seed)
    is_pos = torch.rand(n, generator=g) < pos_frac
    mu_pos, mu_neg = (0.5, 0.0) if dist == "ours" else (-1.0, 1.0)
    s = torch.randn(n, generator=g) + torch.where(is_pos, mu_pos, mu_neg)
    t = torch.where(is_pos, torch.empty(n).uniform_(0.1, 1.0, generator=g), torch.zeros(n))
    return s.to(device), t.to(device)


def run(fn, s: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    """Forward + backward; returns the gradient."""
    x = s.clone().requires_grad_(True)
    out = fn(x, t, **kw)
    (sum(out) if isinstance(out, tuple) else out).backward()
    return x.grad


def timed(fn, s, t, repeats: int, clock=time.perf_counter, **kw) -> float:
    """Best (minimum) seconds of forward+backward over ``repeats`` runs, after one warm-up.

    The minimum, not the median: on a shared host, contention only ever adds time. ``clock``:
    ``time.perf_counter`` (wall) or ``time.process_time`` (CPU time of this process: less sensitive
    to other jobs on a loaded host; CPU only)."""
    run(fn, s, t, **kw)
    times = []
    for _ in range(repeats):
        if s.is_cuda:
            torch.cuda.synchronize()
        t0 = clock()
        run(fn, s, t, **kw)
        if s.is_cuda:
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--pos", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dist", choices=["ours", "paper"], default="ours")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or CPU time of this process (less noisy on a shared CPU host)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    losses = [("RS / BRS", rank_sort_loss, 0.5, {}), ("AP / BAP", ap_loss, 1.0, {})]
    print(f"device={args.device} threads={args.threads} dist={args.dist} positives={args.pos:.1%} "
          f"repeats={args.repeats} clock={args.clock} torch={torch.__version__}")
    header = f"{'L':>8} {'loss':<9} {'delta':>5} {'plain ms':>9} {'bucket ms':>9} {'speed-up':>8} " \
             f"{'max|dg| @delta':>14} {'max|dg| @0':>11}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        s, t = make_inputs(n, args.pos, args.dist, args.seed, args.device)
        for name, fn, delta, kw in losses:
            t_plain = timed(fn, s, t, args.repeats, clock, delta=delta, bucketed=False, **kw)
            t_buck = timed(fn, s, t, args.repeats, clock, delta=delta, bucketed=True, **kw)
            d_delta = (run(fn, s, t, delta=delta, bucketed=False, **kw)
                       - run(fn, s, t, delta=delta, bucketed=True, **kw)).abs().max().item()
            d_zero = (run(fn, s, t, delta=0.0, bucketed=False, **kw)
                      - run(fn, s, t, delta=0.0, bucketed=True, **kw)).abs().max().item()
            print(f"{n:>8} {name:<9} {delta:>5.2g} {t_plain * 1e3:>9.2f} {t_buck * 1e3:>9.2f} "
                  f"{t_plain / t_buck:>7.1f}x {d_delta:>14.2e} {d_zero:>11.2e}")


if __name__ == "__main__":
    main()
