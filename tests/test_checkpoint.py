"""Checkpoints: atomic writes, weights_only loading, and exact resume of a training run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deepmot.runtime import checkpoint as ck
from deepmot.runtime.run import Run, find_latest_checkpoint
from deepmot.runtime.seed import seed_everything


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, {"step": 1, "w": torch.arange(4.0)})
    real_save = torch.save

    def crash_midway(obj, f, *a, **k):
        f.write(b"partial garbage")  # some bytes reach the temp file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"step": 2, "w": torch.zeros(4)})
    monkeypatch.setattr(torch, "save", real_save)
    state = ck.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        ck.load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ck.load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    seed_everything(3)
    state = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    ck.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def _make():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps):
    for _ in range(steps):
        # data and dropout masks come from all three RNGs, so a resume must restore them all
        x = torch.randn(16, 3) + float(np.random.rand()) + random.random()
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_train_n_plus_resume_m_equals_n_plus_m_bit_for_bit(tmp_path):
    seed_everything(0)
    model, opt, sched = _make()
    _train(model, opt, sched, 7)
    reference = [p.detach().clone() for p in model.parameters()]

    seed_everything(0)
    model, opt, sched = _make()
    _train(model, opt, sched, 4)
    run = Run.create("resume-test", root=tmp_path)
    ck.save_checkpoint(run.checkpoint_dir / "last.pt", {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": 4, "rng": ck.rng_state()})
    run.close()

    seed_everything(123)  # a fresh process would start from some other state
    model, opt, sched = _make()
    state = ck.load_checkpoint(find_latest_checkpoint(run.dir))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    ck.set_rng_state(state["rng"])
    _train(model, opt, sched, 7 - state["step"])
    for p, q in zip(model.parameters(), reference):
        assert torch.equal(p, q)


def test_run_directory_logs_and_metrics(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class C:
        lr: float = 0.1

    run = Run.create("demo", C(), root=tmp_path)
    run.logger.info("hello")
    run.log_scalars(1, {"loss": 0.5})
    run.close()
    assert (run.dir / "config.yaml").read_text().strip() == "lr: 0.1"
    assert "hello" in (run.dir / "log.txt").read_text()
    lines = (run.dir / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,key,value") and lines[1].startswith("1,loss,0.5")
    again = Run.create("demo", root=tmp_path, resume=run.dir)
    again.log_scalars(2, {"loss": 0.25})
    again.close()
    assert len((run.dir / "metrics.csv").read_text().splitlines()) == 3


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    first = Run.create("demo", root=tmp_path)
    (tmp_path / "demo" / "20260101-000000-1").mkdir()  # e.g. another process's run
    # Another process may take a name between any existence check and mkdir: a stale check
    # (simulated by exists() always answering False) must not crash the run.
    monkeypatch.setattr(type(tmp_path), "exists", lambda self, **kw: False)
    second = Run.create("demo", root=tmp_path)
    monkeypatch.undo()
    first.close()
    second.close()
    assert first.dir.name == "20260101-000000"
    assert second.dir.name == "20260101-000000-2"
    assert (first.dir / "log.txt").exists() and (second.dir / "log.txt").exists()
