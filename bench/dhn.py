"""DHN throughput: batched vs one-by-one inference (matrices/s) and training steps/s.

    python bench/dhn.py [--threads 1] [--seconds 3] [--hidden 64 128 256]
    python bench/dhn.py --eval [WEIGHTS] [--count 2000]   # held-out metrics per size bucket

Prints markdown tables. Hidden 256 is DeepMOT's DHN.pth architecture; 128 is the shipped one
(the head and activation follow configs/dhn.yaml for non-256 sizes).
"""

from __future__ import annotations

import argparse
import time

import torch

from deepmot.dhn.data import DHNDataConfig, heldout_set, make_batch
from deepmot.dhn.metrics import evaluate_model, format_table
from deepmot.dhn.model import DeepHungarianNet
from deepmot.dhn.train import weighted_focal_loss


def _model(hidden: int) -> DeepHungarianNet:
    if hidden == 256:
        return DeepHungarianNet()
    return DeepHungarianNet(hidden_size=hidden, head_dims=(128, 64), head_activation="relu")


def _rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        k += 1
    return k / (time.perf_counter() - t0)


def evaluate(weights: str | None, count: int, seed: int) -> None:
    """Print the per-bucket metrics of ``weights`` (shipped ones if None) on the held-out set."""
    model = DeepHungarianNet.pretrained(weights)
    samples = heldout_set(seed=seed, count=count, max_size=30)
    t0 = time.perf_counter()
    res = evaluate_model(model, samples, threshold=0.5)
    print(f"held-out: {count} matrices, seed {seed}, sizes <= 30, gated; model {model.config}; "
          f"{time.perf_counter() - t0:.1f}s\n")
    print(format_table(res, 0.5))


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, default=32, help="matrices per batched call")
    ap.add_argument("--eval", nargs="?", const="", default=None, metavar="WEIGHTS",
                    help="evaluate weights (default: the shipped ones) on the held-out set instead")
    ap.add_argument("--count", type=int, default=2000, help="held-out matrices for --eval")
    ap.add_argument("--seed", type=int, default=20240, help="held-out seed for --eval")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval is not None:
        evaluate(args.eval or None, args.count, args.seed)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU\n")
    print("| hidden | size | mode | matrices/s |")
    print("|---|---|---|---|")
    for hidden in args.hidden:
        model = _model(hidden).freeze()
        for size in (10, 30):
            mats = torch.rand(args.batch, size, size)
            with torch.no_grad():
                one = _rate(lambda: [model(m[None]) for m in mats[:8]], args.seconds) * 8
                bat = _rate(lambda: model(mats), args.seconds) * args.batch
            print(f"| {hidden} | {size}x{size} | one-by-one | {one:.1f} |")
            print(f"| {hidden} | {size}x{size} | batched ({args.batch}) | {bat:.1f} |")
    print("\n| hidden | train batch (stream, 4096 entries) | steps/s | matrices/s |")
    print("|---|---|---|---|")
    cfg = DHNDataConfig(elements_per_batch=4096)
    for hidden in args.hidden:
        model = _model(hidden).train()
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)
        for size in (10, 30):
            x = torch.rand(max(1, 4096 // (size * size)), size, size)
            y = (torch.rand_like(x) < 1.0 / size).float()

            def step():
                loss = weighted_focal_loss(model(x, return_logits=True), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            sps = _rate(step, args.seconds)
            print(f"| {hidden} | {x.shape[0]} x {size}x{size} | {sps:.2f} | {sps * x.shape[0]:.1f} |")
    idx = iter(range(10**9))
    gen = _rate(lambda: make_batch(0, 0, next(idx), cfg), args.seconds)
    print(f"\ndata stream (scene generation + exact targets): {gen:.2f} batches/s "
          f"(mixed sizes up to {cfg.max_size}, ~4096 entries each)")


if __name__ == "__main__":
    main()
