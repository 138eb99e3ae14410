"""One-call GPU benchmark: every speed number the project needs from a CUDA machine, in one run.

Prints three tables (each part also says how long it took):

1. batched SiamRPN tracking vs a loop of single-target trackers at 1 / 10 / 30 targets, for the
   ``alex`` and ``r50`` models (:mod:`bench.siamrpn`'s measurement);
2. the shipped DHN, forward and forward + backward (gradient w.r.t. the input, as inside the
   DeepMOT loss, cuDNN off as the loss runs it) on 10x10 and 30x30 matrices, milliseconds;
3. DeepMOT fine-tuning frames per second at 10 and 30 targets for the tiny and the full AlexNet
   SiamRPN (:mod:`bench.finetune`'s measurement).

``bench/gpu.sh`` runs this and then the CUDA tests (``tests/test_cuda.py``). Needs only torch,
torchvision, OpenCV, SciPy, NumPy, PyYAML and tqdm (plus pytest for the tests); sized to finish in
well under 6 minutes on one GPU. ``--smoke`` runs every part on the CPU with tiny sizes in a few
seconds (the test suite does, so the script cannot rot).

    python bench/gpu.py                 # CUDA (falls back to the CPU, and says so, without one)
    python bench/gpu.py --smoke         # CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import finetune  # noqa: E402
import siamrpn  # noqa: E402
from deepmot.dhn.model import DeepHungarianNet  # noqa: E402
from trackers.siamrpn import build_siamrpn  # noqa: E402


#: Tracking models of table 1 (``tiny``: smoke mode only).
TRACK_MODELS = {**siamrpn.MODELS, "tiny": "siamrpn_alex_tiny"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def part_siamrpn(device: torch.device, models: list[str], targets: list[int], frames: int,
                 calibration_batch: int = 8) -> None:
    """Table 1: batched vs per-target loop tracking, frames per second (all targets per frame)."""
    print(f"{'model':6} {'N':>3} | {'batched fps':>11} {'loop fps':>9} {'speed-up':>8}")
    for name in models:
        torch.manual_seed(0)
        model = siamrpn.calibrate_batchnorm(build_siamrpn(TRACK_MODELS[name]).to(device), calibration_batch)
        for n in targets:
            video, boxes = siamrpn.synthetic_video(n, n, max(frames, 3))
            tb, tl, _ = siamrpn.bench(model, video, boxes, device)
            print(f"{name:6} {n:>3} | {1 / tb:>11.2f} {1 / tl:>9.2f} {tl / tb:>7.2f}x", flush=True)


def _best_ms(fn, device: torch.device, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def part_dhn(device: torch.device, sizes: list[int], repeat: int) -> None:
    """Table 2: the shipped DHN on ``n x n`` matrices, forward and forward + input backward (ms)."""
    dhn = DeepHungarianNet.pretrained(map_location=device)
    cudnn_off = torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()
    print(f"{'size':>7} | {'forward ms':>10} {'fwd+bwd ms':>10}")
    for n in sizes:
        d = torch.rand(1, n, n, device=device)

        def forward():
            with torch.no_grad():
                dhn(d)

        def forward_backward():
            x = d.clone().requires_grad_(True)
            dhn(x).sum().backward()

        with cudnn_off:
            f, fb = _best_ms(forward, device, repeat), _best_ms(forward_backward, device, repeat)
        print(f"{f'{n}x{n}':>7} | {f:>10.1f} {fb:>10.1f}", flush=True)


def part_training(device: torch.device, models: list[str], targets: list[int], frames: int) -> None:
    """Table 3: DeepMOT fine-tuning frames per second (one clip, shipped DHN)."""
    print(f"{'model':<22} {'targets':>7} {'tracks':>7} {'s/frame':>8} {'frames/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in targets:
            data = finetune._dataset(work, n, frames)
            for name in models:
                r = finetune.measure(name, data, frames, torch.get_num_threads(), work, device=str(device))
                print(f"{name:<22} {n:>7} {r['tracks']:>7.1f} {r['sec']:>8.3f} {1 / r['sec']:>9.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and print the three tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, a few seconds (the test suite)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--parts", nargs="+", default=["siamrpn", "dhn", "training"],
                    choices=["siamrpn", "dhn", "training"])
    args = ap.parse_args(argv)
    if args.smoke:
        device = torch.device(args.device or "cpu")
        torch.set_num_threads(1)
        sizes = dict(track_models=["tiny"], track_targets=[1, 2], track_frames=3, calibration_batch=2,
                     dhn_sizes=[3], repeat=1, train_models=["siamrpn_alex_tiny"], train_targets=[2],
                     train_frames=3)
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        sizes = dict(track_models=["alex", "r50"], track_targets=[1, 10, 30], track_frames=5, dhn_sizes=[10, 30],
                     calibration_batch=8, repeat=5, train_models=["siamrpn_alex_tiny", "siamrpn_alex_dwxcorr"],
                     train_targets=[10, 30], train_frames=6)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}, threads {torch.get_num_threads()}"
          f"{'; SMOKE sizes' if args.smoke else ''}"
          f"{'; no CUDA device: CPU numbers' if device.type == 'cpu' and not args.smoke else ''}")
    start = time.perf_counter()
    parts = {"siamrpn": lambda: part_siamrpn(device, sizes["track_models"], sizes["track_targets"],
                                             sizes["track_frames"], sizes["calibration_batch"]),
             "dhn": lambda: part_dhn(device, sizes["dhn_sizes"], sizes["repeat"]),
             "training": lambda: part_training(device, sizes["train_models"], sizes["train_targets"],
                                               sizes["train_frames"])}
    titles = {"siamrpn": "1. SiamRPN tracking: batched vs per-target loop",
              "dhn": "2. DHN (shipped weights), cuDNN off as in the loss",
              "training": "3. DeepMOT fine-tuning"}
    for key in args.parts:
        t = time.perf_counter()
        print(f"\n{titles[key]}")
        parts[key]()
        print(f"({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
