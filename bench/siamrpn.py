"""Benchmark: batched SiamRPN tracking of N targets vs a loop of N single-target trackers.

Prints, per model and N, the frames per second of both (all N targets tracked per frame), the
speed-up, and the batched path's time split (crops / network / post-processing, ms per frame).
Models carry seeded random weights (timing does not depend on the values); frames are synthetic.

    python bench/siamrpn.py                       # alex and r50, N = 1, 10, 30, CPU
    python bench/siamrpn.py --models alex --targets 1 10 30 --frames 5 --threads 2
    python bench/siamrpn.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from trackers.siamrpn import build_siamrpn
from trackers.siamrpn.crop import channel_average, crop_batch
from trackers.siamrpn.postprocess import propose, search_scales, template_sizes, update_state
from trackers.siamrpn.tracker import BatchedSiamRPNTracker, SiamRPNTracker

MODELS = {"alex": "siamrpn_alex_dwxcorr", "r50": "siamrpn_r50_l234_dwxcorr"}


def synthetic_video(seed: int, n_targets: int, n_frames: int, hw=(480, 640)):
    """Textured background and ``n_targets`` textured rectangles moving at constant speed:
    frames ``(T, H, W, 3)`` uint8 BGR and first-frame boxes ``(N, 4)`` ``x, y, w, h``."""
    rng = np.random.default_rng(seed)
    h, w = hw
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    bg = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    sizes = rng.uniform(20, 100, (n_targets, 2))
    pos = rng.uniform(0, [w - 100, h - 100], (n_targets, 2))
    vel = rng.uniform(-6, 6, (n_targets, 2))
    tex = [rng.integers(0, 256, (int(s[1]), int(s[0]), 3), dtype=np.uint8) for s in sizes]
    for t in range(n_frames):
        frames[t] = bg
        for i in range(n_targets):
            x0, y0 = np.clip((pos[i] + t * vel[i]).round().astype(int), 0, [w - tex[i].shape[1], h - tex[i].shape[0]])
            frames[t, y0:y0 + tex[i].shape[0], x0:x0 + tex[i].shape[1]] = tex[i]
    return frames, np.concatenate([pos, sizes], axis=1)


def calibrate_batchnorm(model: torch.nn.Module, batch: int = 8) -> torch.nn.Module:
    """Make a random-init model track sanely (r50 overflows with default BN statistics): estimate BN
    running statistics on template/search crops of a synthetic video, scale the last loc convs to
    an output std of 0.2 (as the PySOT fixture's calibration), return the model in eval mode."""
    frames, boxes = synthetic_video(12345, batch, 2)
    tr = BatchedSiamRPNTracker(model)
    center = torch.from_numpy(boxes[:, :2] + boxes[:, 2:] / 2)
    size = torch.from_numpy(boxes[:, 2:])
    avg = np.tile(channel_average(frames[0]), (batch, 1))
    z = crop_batch(frames[0], center.numpy(), tr.params.exemplar_size, template_sizes(size, tr.params).numpy(), avg)
    x = crop_batch(frames[1], center.numpy(), tr.params.instance_size, search_scales(size, tr.params)[1].numpy(), avg)
    z, x = z.to(tr.device), x.to(tr.device)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                            # cumulative average over the batch
    model.train()
    with torch.no_grad():
        model(z, x)
        model.eval()
        _, loc = model(z, x)                             # then tame the regression output
        k = 0.2 / float(loc.std())
        for name, mod in model.named_modules():
            if name.endswith("loc.head.3"):
                mod.weight.mul_(k)
                mod.bias.mul_(k)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_split(tr: BatchedSiamRPNTracker, frame: np.ndarray, device: torch.device) -> dict[str, float]:
    """Seconds spent in crops / network / post-processing by one batched step (state untouched)."""
    s = tr.state
    t0 = time.perf_counter()
    x, _ = tr.search_crops(frame)
    t1 = time.perf_counter()
    with torch.no_grad():
        cls, loc = tr.network(s.zf, x)
        sync(device)
        t2 = time.perf_counter()
        props = propose(cls, loc, s.size, tr.anchors, tr.window, tr.params)
        update_state(s.center, s.size, props, tr.params, frame.shape[:2])
        sync(device)
    t3 = time.perf_counter()
    return {"crop": t1 - t0, "net": t2 - t1, "post": t3 - t2}


def bench(model, frames, boxes, device) -> tuple[float, float, dict[str, float]]:
    """Seconds per frame (minimum over frames 2..T-1) of one ``BatchedSiamRPNTracker.track`` for all
    targets and of a loop of single-target ``SiamRPNTracker.track`` calls. The two are timed
    alternately on every frame, so both see the same machine load."""
    batched = BatchedSiamRPNTracker(model)
    batched.add(frames[0], boxes)
    singles = []
    for b in boxes:
        singles.append(SiamRPNTracker(model))
        singles[-1].init(frames[0], b.tolist())
    tb, tl = [], []
    for i, f in enumerate(frames[1:]):
        sync(device)
        t0 = time.perf_counter()
        batched.track(f)
        sync(device)
        t1 = time.perf_counter()
        for t in singles:
            t.track(f)
        sync(device)
        t2 = time.perf_counter()
        if i > 0:                                        # frame 1 is warm-up
            tb.append(t1 - t0)
            tl.append(t2 - t1)
    splits = [time_split(batched, frames[-1], device) for _ in range(2)]
    split = {k: min(sp[k] for sp in splits) for k in splits[0]}
    return min(tb), min(tl), split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["alex", "r50"], choices=sorted(MODELS))
    ap.add_argument("--targets", nargs="+", type=int, default=[1, 10, 30])
    ap.add_argument("--frames", type=int, default=4, help="frames per run (init + warm-up + timed)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} frames={args.frames} (init + 1 warm-up; min over the rest) torch={torch.__version__}")
    header = f"{'model':6} {'N':>3} | {'batched fps':>11} {'loop fps':>9} {'speed-up':>8} | " \
             f"{'crop ms':>8} {'net ms':>8} {'post ms':>8}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = calibrate_batchnorm(build_siamrpn(MODELS[name]).to(device))
        for n in args.targets:
            frames, boxes = synthetic_video(n, n, max(args.frames, 3))
            tb, tl, split = bench(model, frames, boxes, device)
            print(f"{name:6} {n:>3} | {1 / tb:>11.2f} {1 / tl:>9.2f} {tl / tb:>7.2f}x | "
                  f"{split['crop'] * 1e3:>8.1f} {split['net'] * 1e3:>8.1f} {split['post'] * 1e3:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
