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
"""

from __future__ import annotations

import argparse
import logging
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
            dhn: str | None = None) -> dict:
    """Train on the first ``frames`` frames of ``data``'s sequence (one clip) with the DHN weights
    ``dhn`` (None: the shipped ones); returns the mean live tracks and GT per trained frame, the
    wall and the process CPU seconds per trained frame (on a shared machine the CPU time is the
    steadier measure)."""
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
    trainer = DeepMOTTrainer(cfg, run, DistInfo(), data, SiamRPNTrainable(model, cfg),
                             build_dhn(dhn, torch.device("cpu")))
    clips = trainer._start_clips([0], 0)
    trainer._frame_step(clips)                    # first frame: births, not timed
    trainer._frame_step(clips)                    # warm-up (allocator, lazy inits)
    tracks = gt = cpu = 0.0
    times = []
    for _ in range(frames - 2):
        t, c = time.perf_counter(), time.process_time()
        logs = trainer._frame_step(clips)
        times.append(time.perf_counter() - t)
        cpu += time.process_time() - c
        tracks += logs.get("tracks", 0.0)
        gt += logs.get("gt", 0.0)
    run.close()
    n = max(len(times), 1)
    return {"tracks": tracks / n, "gt": gt / n, "sec": sum(times) / n, "cpu": cpu / n}


def main() -> None:
    """Parse arguments, time the training loop per model and target count, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["siamrpn_alex_tiny"])
    ap.add_argument("--targets", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (the first two are not timed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dhn", nargs="+", default=["shipped"], metavar="WEIGHTS",
                    help="DHN weights to time, one row each ('shipped': deepmot/dhn/weights/dhn.pt)")
    args = ap.parse_args()
    if args.frames < 3:
        ap.error("--frames must be >= 3 (one birth frame and one warm-up frame are not timed)")
    print(f"DeepMOT fine-tuning throughput, CPU, {args.threads} thread(s), {args.frames - 2} timed frames")
    print(f"{'model':<22} {'DHN':<14} {'targets':>7} {'tracks':>7} {'GT':>6} {'s/frame':>8} "
          f"{'frames/s':>9} {'cpu s/frame':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.targets:
            data = _dataset(work, n, args.frames)
            for name in args.models:
                for dhn in args.dhn:
                    r = measure(name, data, args.frames, args.threads, work,
                                None if dhn == "shipped" else dhn)
                    print(f"{name:<22} {Path(dhn).name[-14:]:<14} {n:>7} {r['tracks']:>7.1f} "
                          f"{r['gt']:>6.1f} {r['sec']:>8.3f} {1.0 / r['sec']:>9.2f} {r['cpu']:>12.3f}",
                          flush=True)


if __name__ == "__main__":
    main()
