"""`python train.py --dhn`: a tiny run trains, checkpoints, validates; resume continues exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from deepmot.dhn.model import DeepHungarianNet

REPO = Path(__file__).resolve().parents[1]

TINY = ["model.hidden_size=4", "model.head_dims=[4,4]", "data.max_size=6",
        "data.elements_per_batch=64", "val_count=8", "val_every=3", "checkpoint_every=2",
        "log_every=1", "num_threads=1", "lr_every=2", "lr_gamma=0.5"]


def _entry():
    spec = importlib.util.spec_from_file_location("deepmot_train_entry", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sets(items):
    out = []
    for it in items:
        out += ["--set", it]
    return out


def _run_dir(root: Path, name: str) -> Path:
    dirs = sorted((root / "runs" / name).iterdir())
    assert len(dirs) == 1
    return dirs[0]


def test_tiny_run_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry = _entry()
    assert entry.main(["--dhn", "--name", "full", *_sets(TINY + ["steps=4"])]) == 0
    full = _run_dir(tmp_path, "full")
    for f in ("config.yaml", "log.txt", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (full / f).is_file(), f
    assert "val/score" in (full / "metrics.csv").read_text()

    assert entry.main(["--dhn", "--name", "part", *_sets(TINY + ["steps=2"])]) == 0
    part = _run_dir(tmp_path, "part")
    assert entry.main(["--dhn", "--resume", str(part), "--set", "steps=4"]) == 0

    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the checkpoint records its architecture and loads as a pretrained DHN
    model = DeepHungarianNet.pretrained(full / "checkpoints" / "last.pt")
    assert model.config.hidden_size == 4
    assert model(torch.rand(3, 2)).shape == (3, 2)


def test_torchrun_two_ranks_gloo(tmp_path):
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(REPO / "train.py"), "--dhn",
           "--name", "ddp", *_sets(TINY + ["steps=3"])]
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run_dir(tmp_path, "ddp")
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "done at step 3" in log
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_fine_tuning_starts_from_init_and_trains_on_tracking_matrices(tmp_path, monkeypatch):
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic

    monkeypatch.chdir(tmp_path)
    generate_synthetic(tmp_path / "mot", SyntheticConfig(seed=3, num_train=1, num_test=0, width=160, height=96,
                                                         min_frames=12, max_frames=12, max_objects=5))
    entry = _entry()
    assert entry.main(["--dhn", "--name", "base", *_sets(TINY + ["steps=2"])]) == 0
    base = _run_dir(tmp_path, "base") / "checkpoints" / "last.pt"
    ft = TINY + [f"init={base}", "tracking_share=1.0", f"tracking_data={tmp_path / 'mot'}", "steps=2"]
    # a negligible rate (the config refuses 0): the weights stay those of ``init``; a real rate moves them
    assert entry.main(["--dhn", "--name", "frozen", *_sets(ft + ["lr=1e-12"])]) == 0
    assert entry.main(["--dhn", "--name", "moved", *_sets(ft + ["lr=1e-2"])]) == 0
    a = torch.load(base, weights_only=True)["model"]
    b = torch.load(_run_dir(tmp_path, "frozen") / "checkpoints" / "last.pt", weights_only=True)["model"]
    c = torch.load(_run_dir(tmp_path, "moved") / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-8) for k in a)
    assert not all(torch.allclose(a[k], c[k], rtol=0, atol=1e-4) for k in a)
