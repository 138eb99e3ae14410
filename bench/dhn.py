"""DHN throughput: batched vs one-by-one inference (matrices/s) and training steps/s.

    python bench/dhn.py [--threads 1] [--seconds 3] [--hidden 64 128 256]
    python bench/dhn.py --eval [WEIGHTS] [--count 2000] [--fixture DIR]   # exactness tables

Prints markdown tables. Hidden 256 is DeepMOT's DHN.pth architecture; 128 is the shipped one
(the head and activation follow configs/dhn.yaml for non-256 sizes).

``--eval`` measures how often the DHN's row-wise discretised output (threshold 0.5) equals the
exact gated Hungarian matching (IoU gate 0.5, the criterion's convention), beside the row-argmin
baseline: on real-geometry matrices of MOT17-09 (``--fixture``: Lif_T results vs GT, and the
same GT jittered with dropped and false boxes), on held-out synthetic matrices (generator seed 1,
test split: detections, lagged GT, jittered GT) and on the random held-out set (per size bucket,
and all matrices with N, M <= 10).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from deepmot.datasets.layout import discover_sequences
from deepmot.dhn.data import DHNDataConfig, heldout_set, make_batch
from deepmot.dhn.metrics import evaluate_model, evaluate_predictions, format_table
from deepmot.dhn.model import DeepHungarianNet
from deepmot.dhn.tracking_data import TrackingPool, dataset_root, jittered_pair, results_pairs, sample_from_pair
from deepmot.dhn.train import weighted_focal_loss

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mot17"


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


def real_geometry_sets(fixture: Path, seed: int = 0) -> dict[str, list]:
    """``{name: samples}`` of the MOT17-09 fixture (``fixture``: a MOT17 folder with
    ``train/MOT17-09-*`` and ``results/Lif_T/``) and of the held-out synthetic set (seed 1)."""
    out: dict[str, list] = {}
    if (fixture / "results" / "Lif_T").is_dir():
        res, jit = [], []
        rng = np.random.default_rng([seed, 909])
        for info in discover_sequences(fixture, "train"):
            size = (float(info.im_width), float(info.im_height))
            pairs = results_pairs(info.gt_path, fixture / "results" / "Lif_T" / f"{info.name}.txt", size)
            res += [sample_from_pair(p) for p in pairs]
            # the three variant folders share their GT: one jitter draw per folder and frame
            jit += [sample_from_pair(jittered_pair(rng, p.gt, size)) for p in pairs]
        out["MOT17-09 Lif_T results vs GT"] = res
        out["MOT17-09 GT jittered (dropped, false boxes)"] = jit
    else:
        print(f"(no MOT17-09 fixture at {fixture}: real tracker-result rows skipped)\n")
    pool = TrackingPool.from_dataset(dataset_root(None, seed=1), "test")
    for src in ("det", "lag", "jitter"):
        if src == "jitter":
            out["synthetic seed 1 test: jittered GT"] = pool.heldout(seed, 3 * len(pool.gt_frames))[-len(pool.gt_frames):]
        else:
            out[f"synthetic seed 1 test: {src}"] = [sample_from_pair(p) for p in pool.pairs if p.source.startswith(src)]
    return out


def evaluate(weights: str | None, count: int, seed: int, fixture: Path) -> None:
    """Print exactness of ``weights`` (shipped ones if None) on real-geometry and random sets."""
    model = DeepHungarianNet.pretrained(weights)
    print(f"model {weights or 'shipped'}: {model.config}, threshold 0.5, IoU gate 0.5\n")
    print("| set | matrices | max N, M | DHN exact (row) | DHN exact (mutual) | row-argmin exact |")
    print("|---|---|---|---|---|---|")
    for name, samples in real_geometry_sets(fixture).items():
        r = evaluate_model(model, samples, threshold=0.5)
        n = max(s.target.shape[0] for s in samples)
        m = max(s.target.shape[1] for s in samples)
        print(f"| {name} | {len(samples)} | {n}, {m} | {100 * r['dhn_row']['all']['exact']:.2f} % | "
              f"{100 * r['dhn_mutual']['all']['exact']:.2f} % | {100 * r['baseline']['all']['exact']:.2f} % |")
    samples = heldout_set(seed=seed, count=count, max_size=30)
    t0 = time.perf_counter()
    res = evaluate_model(model, samples, threshold=0.5)
    small = [i for i, s in enumerate(samples) if max(s.target.shape) <= 10]
    r10 = evaluate_predictions([samples[i] for i in small],
                               [model.forward_many([samples[i].gated for i in small])][0], 0.5)
    print(f"| random held-out (seed {seed}), N, M <= 10 | {len(small)} | 10, 10 | "
          f"{100 * r10['dhn_row']['all']['exact']:.2f} % | {100 * r10['dhn_mutual']['all']['exact']:.2f} % | "
          f"{100 * r10['baseline']['all']['exact']:.2f} % |")
    print(f"\nrandom held-out: {count} matrices, seed {seed}, sizes <= 30, gated; "
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
    ap.add_argument("--fixture", type=Path, default=FIXTURE,
                    help="MOT17 folder with train/MOT17-09-* and results/Lif_T/ for --eval "
                         "(default: ../shared/fixtures/mot17)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval is not None:
        evaluate(args.eval or None, args.count, args.seed, args.fixture)
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
