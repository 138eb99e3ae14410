"""CUDA against CPU: the DHN and the criterion (1e-5), batched SiamRPN tracking (1e-3 px), and a few
DeepMOT training steps on CUDA (finite, decreasing loss). Skipped without a CUDA device; the
training check also runs on the CPU. ``bench/gpu.sh`` runs this file after its benchmark tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmot.criterion import DeepMOTLoss
from deepmot.dhn.model import DeepHungarianNet
from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS
from trackers.siamrpn.tracker import BatchedSiamRPNTracker
from trackers.siamrpn.train_step import commit, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
IMAGE = (320.0, 240.0)


def _video(seed: int, n: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` BGR frames 240x320 with ``n`` textured boxes drifting right, and their first boxes
    ``(n, 4)`` 0-based ``x, y, w, h``."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.c_[rng.uniform(20, 200, (n, 2)), rng.uniform(30, 60, (n, 2))].round()
    tex = [rng.integers(0, 256, (int(b[3]), int(b[2]), 3), dtype=np.uint8) for b in boxes]
    video = np.repeat(bg[None], frames, axis=0)
    for t in range(frames):
        for b, x in zip(boxes, tex):
            x0, y0 = int(b[0]) + 2 * t, int(b[1]) + t
            video[t, y0:y0 + x.shape[0], x0:x0 + x.shape[1]] = x
    return video, boxes


def _tracker_model(device: str) -> torch.nn.Module:
    model = build_siamrpn("siamrpn_alex_tiny")
    if SYNTHETIC_WEIGHTS.is_file():
        load_pysot_checkpoint(model, str(SYNTHETIC_WEIGHTS))
    return model.to(device)


def _frame(seed: int, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(m, 2, generator=g) * 150 + 50
    s = torch.rand(m, 2, generator=g) * 30 + 30
    gt = torch.cat((c - s / 2, c + s / 2), 1)
    tr = torch.cat((gt + torch.randn(m, 4, generator=g) * 4, gt[: n - m] + 60), 0)[:n]
    return tr, gt


@cuda
def test_dhn_and_criterion_on_cuda_equal_cpu():
    dhn = DeepHungarianNet.pretrained()
    d = torch.rand(1, 12, 9, generator=torch.Generator().manual_seed(0))
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward refuses eval mode
        dc = d.cuda().requires_grad_(True)
        out_gpu = DeepHungarianNet.pretrained(map_location="cuda")(dc)
        out_gpu.sum().backward()
    dd = d.clone().requires_grad_(True)
    out_cpu = dhn(dd)
    out_cpu.sum().backward()
    assert torch.allclose(out_gpu.cpu(), out_cpu, rtol=0, atol=1e-5)
    assert torch.allclose(dc.grad.cpu(), dd.grad, rtol=0, atol=1e-5)

    tr, gt = _frame(1, 7, 6)
    cpu_boxes = tr.clone().requires_grad_(True)
    ref = DeepMOTLoss(dhn)(cpu_boxes, range(7), gt, range(6), IMAGE)
    ref.loss.backward()
    gpu_boxes = tr.cuda().requires_grad_(True)
    res = DeepMOTLoss(DeepHungarianNet.pretrained(map_location="cuda"))(gpu_boxes, range(7), gt.cuda(), range(6),
                                                                         IMAGE)
    res.loss.backward()
    for a, b in ((res.loss, ref.loss), (res.dmota, ref.dmota), (res.dmotp, ref.dmotp), (gpu_boxes.grad, cpu_boxes.grad)):
        assert torch.allclose(a.cpu(), b, rtol=0, atol=1e-5)


@cuda
def test_batched_tracking_on_cuda_equals_cpu():
    video, boxes = _video(2, 5, 4)
    runs = {}
    for device in ("cpu", "cuda"):
        tr = BatchedSiamRPNTracker(_tracker_model(device))
        tr.add(video[0], boxes)
        runs[device] = [tr.track(f).bbox.clone() for f in video[1:]]
    for a, b in zip(runs["cpu"], runs["cuda"]):
        assert torch.allclose(a, b.cpu(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_training_steps_give_finite_decreasing_loss(device: str):
    """Six optimiser steps of the differentiable step + DeepMOT loss on one frame (same state)."""
    torch.manual_seed(0)
    video, boxes = _video(3, 4, 2)
    model = _tracker_model(device)
    tracker = BatchedSiamRPNTracker(model)
    jitter = np.random.default_rng(0).normal(0, 3, boxes.shape)
    ids = tracker.add(video[0], boxes + jitter)
    gt = torch.from_numpy(np.c_[boxes[:, :2] + [2, 1], boxes[:, :2] + [2, 1] + boxes[:, 2:]]).float().to(device)
    crit = DeepMOTLoss(DeepHungarianNet.pretrained(map_location=device))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        out = train_step(tracker, video[1])
        res = crit(out.boxes, ids, gt, ids, IMAGE)
        res.loss.backward()
        opt.step()
        losses.append(float(res.loss.detach()))
    commit(tracker, out)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
