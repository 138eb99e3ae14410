"""Data-parallel helpers for ``torchrun`` and SLURM: process-group setup, parameter broadcast and
the gradient all-reduce used by the DeepMOT loop.

Under ``torchrun --nproc_per_node=N`` the environment holds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; under ``srun`` (no torchrun) SLURM's ``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID`` and ``SLURM_NODELIST`` stand in for them (the first node of the list is the
rendezvous host, ``MASTER_PORT`` defaults to 29500). :func:`init_distributed` joins the group
(NCCL when each rank has a GPU, gloo otherwise). Without those variables everything is a
single-process no-op.

The DeepMOT loop does not wrap the model in ``DistributedDataParallel``: the tracker calls the
model's ``template``/``track`` methods rather than ``forward`` (DDP only hooks ``forward``), and
ranks may contribute no loss on a step (their clip ended, a frame had no tracks). It does what
DDP does by hand instead: identical initial weights (:func:`broadcast_parameters`), then after
each backward the gradients are summed over ranks (:func:`all_reduce_gradients`) before every
rank applies the same optimiser step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from deepmot.runtime.device import resolve_device

__all__ = ["DistInfo", "dist_env", "init_distributed", "any_rank", "cleanup_distributed", "broadcast_parameters",
           "all_reduce_gradients", "all_reduce_sum", "barrier", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank``, ``world`` size, ``local_rank``, ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on rank 0 (the rank that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world > 1


def _first_node(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[03-05,9],cpu1"`` -> ``"gpu03"``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        raise ValueError(f"SLURM node list not understood: {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process from the environment.

    torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` first; else SLURM's ``SLURM_PROCID`` /
    ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (a job step started by ``srun``), in which case the
    torchrun variables (and ``MASTER_ADDR`` from ``SLURM_NODELIST``, ``MASTER_PORT`` 29500 unless
    set) are exported so that ``torch.distributed``'s ``env://`` set-up and
    :func:`~deepmot.progress.is_main_process` see the same job; else ``(0, 1, 0)``.
    """
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        env.setdefault("MASTER_ADDR", _first_node(nodes) if nodes else "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` / SLURM process group if the environment describes one.

    ``device``: see :func:`~deepmot.runtime.device.resolve_device` (``"auto"``: CUDA device
    ``LOCAL_RANK`` when CUDA is available, else CPU). Backend: NCCL on CUDA, gloo on CPU.
    """
    rank, world, local = dist_env()
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if _active():
        dist.barrier()


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy ``module``'s parameters and buffers from rank ``src`` to every rank."""
    if not _active():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` (picklable) on every rank (``obj`` itself when not distributed)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a few Python numbers over ranks (identity when not distributed)."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on any rank (``flag`` itself when not distributed)."""
    if not _active():
        return flag
    return all_reduce_sum([float(flag)], device)[0] > 0


def all_reduce_gradients(params: Iterable[nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over ranks, in place (missing gradients count as zero).

    One flat buffer per call, so the reduction order and hence the result is the same on every
    rank. Parameters without ``requires_grad`` are skipped.
    """
    if not _active():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n
