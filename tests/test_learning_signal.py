"""bench/learning_signal.py on tiny data: it runs on the trainer's API, measures every loss frame
of the loop, and evaluates every variant on the same boxes."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.dhn.model import DeepHungarianNet
from trackers.siamrpn import build_siamrpn

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench():
    path = REPO / "bench" / "learning_signal.py"
    spec = importlib.util.spec_from_file_location("bench_learning_signal", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_clip_measures_every_trained_frame(tmp_path, monkeypatch, capsys):
    generate_synthetic(tmp_path / "data", SyntheticConfig(
        seed=1, num_train=1, num_test=1, width=160, height=96, min_frames=7, max_frames=8,
        min_objects=2, max_objects=3, static_persons=0, reflections=0, camera_pan=0.0))
    torch.manual_seed(0)
    torch.save({"model": DeepHungarianNet(hidden_size=8).state_dict(), "model_config": {"hidden_size": 8}},
               tmp_path / "dhn.pt")
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), tmp_path / "init.pth")
    # "gate=hard" is the default criterion spelled out: its rows must equal "default"'s
    monkeypatch.setattr(sys, "argv", [
        "learning_signal.py", "--clips", "1", "--data", str(tmp_path / "data"),
        "--variants", "default", "gate=hard", "gate=soft,gate_width=0.05",
        "--set", f"dhn={tmp_path / 'dhn.pt'}", f"pretrained={tmp_path / 'init.pth'}", "seq_len=4"])
    _bench().main()
    text = capsys.readouterr().out

    steps = int(re.search(r"(\d+) optimiser steps", text).group(1))
    assert steps >= 1
    sections = re.split(r"\nvariant: ", text)
    tables = {s.split("\n", 1)[0]: s.split("\n", 1)[1].split("\n\n")[0] for s in sections[1:]}
    assert list(tables) == ["default", "gate=hard", "gate=soft,gate_width=0.05"]
    assert tables["default"] == tables["gate=hard"]
    counts = {}
    for line in text.split("assignment agreement")[1].splitlines()[2:5]:
        label, frames = line.split()[:2]
        counts[label] = int(frames)
    # num_repeats=1, clips_per_step=1: one optimiser step per trained frame, each one measured
    assert counts == {"default": steps, "gate=hard": steps, "gate=soft,gate_width=0.05": steps}
    norms = text.split("norm of each term's gradient on the trainable weights (default)")[1]
    for term in ("FP~", "FN~", "IDS~", "dMOTA", "dMOTP", "focal"):
        assert re.search(rf"^{re.escape(term)} +\d", norms, re.M), term
