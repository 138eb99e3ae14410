"""Matcher timings: batched OT vs a per-image loop, and OT/UOT vs the Hungarian, per batch.

Usage: python bench/matching.py [--device cpu|cuda] [--batch 16] [--gt 10] [--repeats 5] [--threads 1]
Prints a table (milliseconds per batch, median of the repeats). Random costs, Ng GT per image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmot.matching import HungarianMatcher, OTMatcher  # noqa: E402


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gt", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="100,300,1000,8732")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    ot20 = OTMatcher(n_iter=20)
    uot = OTMatcher(tau_pred=100.0, tau_gt=0.1, n_iter=20)
    hung = HungarianMatcher()
    print(f"device={args.device} B={args.batch} Ng={args.gt} threads={args.threads} (ms per batch, median of {args.repeats})")
    head = f"{'Np':>6} | {'OT batched':>10} | {'OT loop':>9} | {'UOT batched':>11} | {'Hungarian':>9} | {'OT/Hung':>7}"
    print(head)
    print("-" * len(head))
    for n in (int(s) for s in args.sizes.split(",")):
        cost = torch.rand(args.batch, n, args.gt + 1, generator=gen).to(args.device)
        cost[..., -1] = 1.0
        t_ot = _time(lambda: ot20.match_cost(cost), args.repeats, args.device)
        t_loop = _time(lambda: [ot20.match_cost(cost[b:b + 1]) for b in range(args.batch)], args.repeats, args.device)
        t_uot = _time(lambda: uot.match_cost(cost), args.repeats, args.device)
        t_h = _time(lambda: hung.match_cost(cost), args.repeats, args.device)
        print(f"{n:>6} | {t_ot:>10.2f} | {t_loop:>9.2f} | {t_uot:>11.2f} | {t_h:>9.2f} | {t_ot / t_h:>7.2f}")


if __name__ == "__main__":
    main()
