"""Data-parallel helpers for ``torchrun``: process-group setup, parameter broadcast and the
gradient all-reduce used by the DeepMOT loop.

Under ``torchrun --nproc_per_node=N`` the environment holds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` joins the group (NCCL when each rank has a GPU, gloo
otherwise). Without those variables everything is a single-process no-op.

The DeepMOT loop does not wrap the model in ``DistributedDataParallel``: the tracker calls the
model's ``template``/``track`` methods rather than ``forward`` (DDP only hooks ``forward``), and
ranks may contribute no loss on a step (their clip ended, a frame had no tracks). It does what
DDP does by hand instead: identical initial weights (:func:`broadcast_parameters`), then after
each backward the gradients are summed over ranks (:func:`all_reduce_gradients`) before every
rank applies the same optimiser step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "broadcast_parameters",
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


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if the environment describes one.

    ``device``: ``"auto"`` (CUDA device ``LOCAL_RANK`` when CUDA is available, else CPU),
    ``"cpu"`` or ``"cuda"``. Backend: NCCL on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available")
    dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
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
