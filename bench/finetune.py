"""Benchmark: DeepMOT fine-tuning throughput, training frames per second with N targets.

One training frame = what the loop (:meth:`DeepMOTTrainer._frame_step`) does for one frame of a
clip: load the frame and its GT, the differentiable batched SiamRPN step for every live track,
the DeepMOT criterion (frozen shipped DHN) + anchor focal loss, backward, the Adam step, then
births / deaths / template refresh. Clip-opening frames (births only, no loss) are not timed.

Data: a synthetic MOT17-format sequence (640x360) with exactly N objects, generated into a
temporary directory. Loop settings come from ``configs/deepmot_siamrpn_synthetic.yaml`` (the
main job: 1 repeat, refresh every 5 frames). Weights: the shipped tiny SOT weights for
``siamrpn_alex_tiny``, seeded random ones otherwise (timing does not depend on their values).

    python bench/finetune.py                                      # tiny alex, 10 and 30 targets
    python bench/finetune.py --models siamrpn_alex_tiny siamrpn_alex_dwxcorr --frames 6 --threads 2
    python bench/finetune.py --dhn shipped old_dhn.pt     # compare DHN weights in one run
    python bench/finetune.py --per-object --tree /tmp/old     # + one track at a time, + an old checkout

``--per-object`` adds the reference code's way as a baseline: the same step with the SiamRPN
network pass run one track at a time (``BatchedSiamRPNTracker.max_batch = 1``: each template
encoded and each search crop tracked alone, then the criterion on all of them), and prints the
batched / per-object speed ratio. ``--tree DIR`` times the batched step of another checkout (e.g.
``git worktree add /tmp/old <rev>``) in the same run, in a child process with ``DIR`` first on the
import path. ``--profile`` prints where one step's time goes (torch profiler, top operators).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deepmot.config import load_config
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.engine.deepmot_train import DeepMOTTrainConfig, DeepMOTTrainer, build_dhn
from deepmot.runtime.distributed import DistInfo
from deepmot.runtime.run import Run
from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS
from trackers.siamrpn.trainable import SiamRPNTrainable

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"siamrpn_alex_tiny": SYNTHETIC_WEIGHTS}


def _dataset(root: Path, objects: int, frames: int) -> Path:
    """One training sequence with exactly ``objects`` objects and ``frames`` frames."""
    data = root / f"n{objects}"
    generate_synthetic(data, SyntheticConfig(seed=objects, num_train=1, num_test=0, min_frames=frames,
                                             max_frames=frames, min_objects=objects, max_objects=objects,
                                             static_persons=0, reflections=0))
    return data


def measure(model_name: str, data: Path, frames: int, threads: int, work: Path,
            dhn: str | None = None, per_object: bool = False, profile: bool = False,
            device: str = "cpu") -> dict:
    """Train on the first ``frames`` frames of ``data``'s sequence (one clip) with the DHN weights
    ``dhn`` (None: the shipped ones); returns the mean live tracks and GT per trained frame, the
    wall and the process CPU seconds per trained frame (on a shared machine the CPU time is the
    steadier measure). ``per_object``: the network pass one track at a time (the baseline).
    ``profile``: print the torch profiler's top operators of the timed frames. ``device``: where
    the model, the DHN and the loss run (``"cuda"`` on a GPU machine)."""
    cfg = load_config(DeepMOTTrainConfig, str(REPO / "configs" / "deepmot_siamrpn_synthetic.yaml"),
                      [f"model={model_name}", f"data={data}", f"seq_len={frames}", f"threads={threads}",
                       f"runs_root={work / 'runs'}", "eval_before=false", "eval_after=false"])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_siamrpn(model_name)
    if model_name in SHIPPED and SHIPPED[model_name].is_file():
        load_pysot_checkpoint(model, str(SHIPPED[model_name]))
    run = Run.create(f"bench_{model_name}", cfg, root=work / "runs")
    logging.getLogger().setLevel(logging.WARNING)
    dev = torch.device(device)
    trainer = DeepMOTTrainer(cfg, run, DistInfo(device=dev), data, SiamRPNTrainable(model, cfg),
                             build_dhn(dhn, dev))
    clips = trainer._start_clips([0], 0)
    if per_object:
        for c in clips:
            c.tracks.tracker.max_batch = 1
    trainer._frame_step(clips)                    # first frame: births, not timed
    trainer._frame_step(clips)                    # warm-up (allocator, lazy inits)
    tracks = gt = cpu = 0.0
    times = []
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None
    if prof:
        prof.__enter__()
    for _ in range(frames - 2):
        t, c = time.perf_counter(), time.process_time()
        logs = trainer._frame_step(clips)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        cpu += time.process_time() - c
        tracks += logs.get("tracks", 0.0)
        gt += logs.get("gt", 0.0)
    if prof:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    run.close()
    n = max(len(times), 1)
    return {"tracks": tracks / n, "gt": gt / n, "sec": sum(times) / n, "cpu": cpu / n}


def measure_tree(tree: Path, model_name: str, data: Path, frames: int, threads: int, work: Path) -> dict:
    """:func:`measure` (batched, shipped DHN) with the code of checkout ``tree``, in a child process."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "sys.path.insert(1, sys.argv[2]); import finetune; "
            "r = finetune.measure(sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), Path(sys.argv[7])); "
            "print(json.dumps(r))")
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", code, str(tree), str(Path(__file__).parent), model_name, str(data),
                          str(frames), str(threads), str(work)], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    """Parse arguments, time the training loop per model and target count, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["siamrpn_alex_tiny"])
    ap.add_argument("--targets", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (the first two are not timed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dhn", nargs="+", default=["shipped"], metavar="WEIGHTS",
                    help="DHN weights to time, one row each ('shipped': deepmot/dhn/weights/dhn.pt)")
    ap.add_argument("--per-object", action="store_true",
                    help="also time the network pass one track at a time and print the speed ratio")
    ap.add_argument("--tree", type=Path, nargs="*", default=[],
                    help="other checkouts whose batched step is timed in the same run (shipped DHN)")
    ap.add_argument("--profile", action="store_true", help="print the top operators of each batched row")
    args = ap.parse_args()
    if args.frames < 3:
        ap.error("--frames must be >= 3 (one birth frame and one warm-up frame are not timed)")
    print(f"DeepMOT fine-tuning throughput, CPU, {args.threads} thread(s), {args.frames - 2} timed frames, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<22} {'DHN / code':<16} {'targets':>7} {'tracks':>7} {'GT':>6} {'s/frame':>8} "
          f"{'frames/s':>9} {'cpu s/frame':>12}")

    def row(name: str, label: str, n: int, r: dict) -> None:
        print(f"{name:<22} {label[-16:]:<16} {n:>7} {r['tracks']:>7.1f} {r['gt']:>6.1f} {r['sec']:>8.3f} "
              f"{1.0 / r['sec']:>9.2f} {r['cpu']:>12.3f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.targets:
            data = _dataset(work, n, args.frames)
            for name in args.models:
                for dhn in args.dhn:
                    r = measure(name, data, args.frames, args.threads, work,
                                None if dhn == "shipped" else dhn, profile=args.profile)
                    row(name, Path(dhn).name, n, r)
                    if args.per_object:
                        p = measure(name, data, args.frames, args.threads, work,
                                    None if dhn == "shipped" else dhn, per_object=True)
                        row(name, "per-object", n, p)
                        print(f"{'':<22} {'batched speed-up':<16} {n:>7} {'':>7} {'':>6} "
                              f"{p['sec'] / r['sec']:>7.2f}x {'':>9} {p['cpu'] / r['cpu']:>11.2f}x", flush=True)
                for tree in args.tree:
                    t = measure_tree(tree, name, data, args.frames, args.threads, work)
                    row(name, str(tree), n, t)
                    print(f"{'':<22} {'this vs that':<16} {n:>7} {'':>7} {'':>6} "
                          f"{t['sec'] / r['sec']:>7.2f}x {'':>9} {t['cpu'] / r['cpu']:>11.2f}x", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
