"""Benchmark: where the time of one SOT pre-training step goes (``trackers.siamrpn.pretrain``).

Prints, per batch size, the milliseconds per step of: pair sampling with a cold frame cache
(JPEG decode + crop + augmentation), pair sampling with a warm cache (crop + augmentation only),
anchor targets, forward + loss, backward, optimiser step; and the pairs per second of a whole
step. Weights are seeded random (timing does not depend on their values). Needs a MOT-format
dataset (default: the synthetic set, generated if missing).

    python bench/sot_pretrain.py                               # siamrpn_alex_tiny, batch 8 and 16
    python bench/sot_pretrain.py --batch 16 32 --threads 2 --steps 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deepmot.datasets import resolve_data_root
from trackers.siamrpn import build_siamrpn
from trackers.siamrpn.pairs import PairSampler
from trackers.siamrpn.targets import anchor_targets, rpn_loss


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def main() -> None:
    """Parse arguments, time the pieces of a training step, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="siamrpn_alex_tiny")
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per batch size (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = resolve_data_root(args.data)
    model = build_siamrpn(args.model).train()
    cfg = model.cfg
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    print(f"model {cfg.name} ({sum(p.numel() for p in model.parameters())} parameters), "
          f"search {cfg.train.search_size}px, {args.threads} thread(s), data {root}")
    print(f"{'batch':>5} {'cold data':>10} {'warm data':>10} {'targets':>8} {'forward':>8} "
          f"{'backward':>9} {'optim':>6} {'step ms':>8} {'pairs/s':>8}")
    for b in args.batch:
        sampler = PairSampler(root, cfg)          # fresh, empty frame cache
        cold = []
        for _ in range(args.steps):
            t = time.perf_counter()
            sampler.sample(b, rng)
            cold.append(_ms(t))
        for tr in sampler.tracks:                 # warm the cache with every frame
            for f in tr.frames:
                sampler.image(tr.seq, int(f))
        rows = []
        for k in range(args.steps + 1):
            t = time.perf_counter()
            batch = sampler.sample(b, rng)
            t_data = _ms(t)
            t = time.perf_counter()
            targets = anchor_targets(batch.target, batch.positive, cfg, gen)
            t_tgt = _ms(t)
            t = time.perf_counter()
            cls, loc = model(batch.template, batch.search)
            loss = rpn_loss(cls, loc, targets)[0]
            t_fwd = _ms(t)
            t = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t_bwd = _ms(t)
            t = time.perf_counter()
            opt.step()
            t_opt = _ms(t)
            if k > 0:
                rows.append((t_data, t_tgt, t_fwd, t_bwd, t_opt))
        warm, tgt, fwd, bwd, opt_ms = np.mean(rows, axis=0)
        step = warm + tgt + fwd + bwd + opt_ms
        print(f"{b:>5} {np.mean(cold):>10.0f} {warm:>10.0f} {tgt:>8.1f} {fwd:>8.0f} {bwd:>9.0f} "
              f"{opt_ms:>6.1f} {step:>8.0f} {1000 * b / step:>8.1f}")


if __name__ == "__main__":
    main()
