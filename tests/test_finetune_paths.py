"""The batched DeepMOT training step against the per-object reference path (the SiamRPN network
pass one track at a time, as the reference code runs it, ``max_batch = 1``): same losses over 20
optimiser steps, and the batched step repeats itself exactly with the same seed and threads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from deepmot.config import load_config
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.dhn.model import DeepHungarianNet
from deepmot.engine import deepmot_train as dt
from deepmot.runtime.distributed import DistInfo
from deepmot.runtime.run import Run
from trackers.siamrpn import build_siamrpn
from trackers.siamrpn.trainable import SiamRPNTrainable

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 20


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune_paths")
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=1, num_test=0, width=192, height=128,
                                             min_frames=STEPS + 2, max_frames=STEPS + 2, min_objects=3,
                                             max_objects=3, static_persons=0, reflections=0, camera_pan=0.0))
    return root


def _losses(data: Path, per_object: bool) -> list[float]:
    """Losses of the first ``STEPS`` optimiser steps of one clip (seed 0, one thread)."""
    cfg = load_config(dt.DeepMOTTrainConfig, None, [
        f"data={data}", f"runs_root={data / 'runs'}", f"seq_len={STEPS + 2}", "num_repeats=1", "epochs=1",
        "refresh_every=5", "threads=1", "eval_before=false", "eval_after=false", "eval_every=0",
        "train_detections=[DPM]"])
    torch.manual_seed(0)
    dhn = DeepHungarianNet(hidden_size=8).freeze()
    torch.manual_seed(0)
    model = build_siamrpn("siamrpn_alex_tiny")
    run = Run.create("paths", cfg, root=data / "runs")
    logging.getLogger().setLevel(logging.WARNING)
    trainer = dt.DeepMOTTrainer(cfg, run, DistInfo(), data, SiamRPNTrainable(model, cfg), dhn)
    clips = trainer._start_clips([0], 0)
    if per_object:
        for c in clips:
            c.tracks.tracker.max_batch = 1
    losses = []
    while len(losses) < STEPS and not clips[0].done:
        logs = trainer._frame_step(clips)
        if "loss" in logs:
            losses.append(logs["loss"])
    run.close()
    assert len(losses) == STEPS
    return losses


@pytest.fixture(scope="module")
def batched(data: Path) -> list[float]:
    return _losses(data, per_object=False)


def test_batched_step_equals_per_object_reference(data: Path, batched: list[float]) -> None:
    reference = _losses(data, per_object=True)
    # Before the first update the forward passes agree bit for bit (each crop is convolved alone
    # either way); afterwards the weight gradients are summed over the batch inside the
    # convolution instead of crop by crop, so later losses agree to rounding only.
    assert batched[0] == reference[0]
    assert batched == pytest.approx(reference, rel=1e-4, abs=1e-6)
    assert batched != [batched[0]] * STEPS  # the weights moved


def test_batched_step_repeats_exactly(data: Path, batched: list[float]) -> None:
    assert _losses(data, per_object=False) == batched
