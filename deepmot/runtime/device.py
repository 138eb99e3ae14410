"""Device names of the configs (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) -> torch devices."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device a process of a run uses.

    ``"auto"``: CUDA device ``local_rank`` (modulo the device count) when CUDA is available,
    else the CPU; ``"cuda"``: the same CUDA device, an error without CUDA; ``"cuda:N"``: that
    device (an error when it does not exist); ``"cpu"``: the CPU. Raises ``ValueError`` for any
    other name.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name not in ("auto", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if not torch.cuda.is_available():
        if name == "auto":
            return torch.device("cpu")
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    if name.startswith("cuda:"):
        if int(name[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
