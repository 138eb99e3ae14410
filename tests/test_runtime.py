"""The runtime layer: SLURM variables -> rank / world size / local rank (and a real two-process
group started the way ``srun`` starts it), device names, and preemption (SIGUSR1 / SIGTERM ->
checkpoint, clean exit, ``--resume`` ends at the weights of an uninterrupted run) in the DHN and
SOT pre-training loops. The DeepMOT loop's SIGTERM test is in test_deepmot_train.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepmot.config import load_config
from deepmot.runtime.device import resolve_device
from deepmot.runtime.distributed import dist_env, init_distributed
from deepmot.runtime.preempt import Preempted

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _slurm_env(**extra: str) -> dict[str, str]:
    """A process environment as srun sets it: SLURM variables, no torchrun ones."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
           and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def test_slurm_variables_give_rank_world_size_and_local_rank(monkeypatch):
    env = _slurm_env(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_LOCALID="1", SLURM_NODELIST="gpu[07-08,11],cpu3")
    monkeypatch.setattr(os, "environ", env)
    assert dist_env() == (5, 8, 1)
    # exported for torch.distributed's env:// rendezvous and for rank-0-only logging
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")
    assert env["MASTER_ADDR"] == "gpu07" and env["MASTER_PORT"] == "29500"


def test_torchrun_variables_win_over_slurm_and_no_variables_mean_one_process(monkeypatch):
    env = _slurm_env(SLURM_PROCID="5", SLURM_NTASKS="8", RANK="2", WORLD_SIZE="4", LOCAL_RANK="0")
    monkeypatch.setattr(os, "environ", env)
    assert dist_env() == (2, 4, 0)         # torchrun inside an allocation: its variables count
    monkeypatch.setattr(os, "environ", _slurm_env())
    info = init_distributed("cpu")
    assert (info.rank, info.world, info.local_rank, info.device, info.main) == (0, 1, 0, torch.device("cpu"), True)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto", local_rank=3) == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")


_WORKER = """
import torch
from deepmot.runtime.distributed import all_reduce_sum, cleanup_distributed, init_distributed
info = init_distributed("cpu")
total = all_reduce_sum([float(info.rank + 1)])[0]
print(info.rank, info.world, info.local_rank, total, flush=True)
cleanup_distributed()
"""


@pytest.mark.slow
def test_two_processes_started_like_srun_form_one_gloo_group(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_slurm_env(PYTHONPATH=str(REPO), SLURM_PROCID=str(r), SLURM_NTASKS="2",
                                                        SLURM_LOCALID=str(r), SLURM_NODELIST="127.0.0.1",
                                                        MASTER_PORT=str(port), OMP_NUM_THREADS="1"))
             for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    rows = sorted(o[0].split() for o in outs)
    assert rows == [["0", "2", "0", "3.0"], ["1", "2", "1", "3.0"]]


def _signal_on_call(module, name: str, call: int, signum: int, monkeypatch) -> None:
    """Make ``module.name`` (a loss function) send ``signum`` to this process on its ``call``-th use."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_dhn_training_preempted_by_sigusr1_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import deepmot.dhn.train as dhn_train

    monkeypatch.chdir(tmp_path)
    tiny = ["model.hidden_size=4", "model.head_dims=[4,4]", "data.max_size=6", "data.elements_per_batch=64",
            "val_count=8", "val_every=100", "checkpoint_every=100", "log_every=100", "num_threads=1", "steps=6"]
    straight = dhn_train.train_dhn(load_config(dhn_train.DHNTrainConfig, None, tiny + ["name=straight"]))
    with monkeypatch.context() as m:
        _signal_on_call(dhn_train, "weighted_focal_loss", 3, signal.SIGUSR1, m)
        with pytest.raises(Preempted) as e:
            dhn_train.train_dhn(load_config(dhn_train.DHNTrainConfig, None, tiny + ["name=cut"]))
    assert e.value.code == 128 + signal.SIGUSR1
    (cut,) = (tmp_path / "runs" / "cut").iterdir()
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL       # handlers given back
    dhn_train.train_dhn(load_config(dhn_train.DHNTrainConfig, None, tiny + ["name=cut"]), resume=cut)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
def test_sot_pretraining_preempted_by_sigterm_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
    from trackers.siamrpn import pretrain as sot

    data = tmp_path / "data"
    generate_synthetic(data, SyntheticConfig(num_train=1, num_test=1, width=240, height=160, min_frames=12,
                                             max_frames=12, min_objects=2, max_objects=2), log=lambda s: None)
    args = [f"data={data}", f"runs_root={tmp_path / 'runs'}", "batch_size=2", "warmup_steps=1", "steps=4",
            "checkpoint_every=100", "threads=1"]
    straight, _ = sot.pretrain(load_config(sot.PretrainConfig, None, args + [f"out={tmp_path / 'a.pth'}"]))
    with monkeypatch.context() as m:
        _signal_on_call(sot, "rpn_loss", 2, signal.SIGTERM, m)
        with pytest.raises(Preempted) as e:
            sot.pretrain(load_config(sot.PretrainConfig, None, args + [f"out={tmp_path / 'b.pth'}"]))
    assert e.value.code == 128 + signal.SIGTERM and not (tmp_path / "b.pth").exists()
    runs = sorted((tmp_path / "runs" / "siamrpn_pretrain").iterdir())
    cut = runs[-1]
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    resumed, _ = sot.pretrain(load_config(sot.PretrainConfig, None, args + [f"out={tmp_path / 'b.pth'}"]),
                              resume=str(cut))
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
