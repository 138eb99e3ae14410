"""What the machine gives a run: device, torch threads, cores, load (logged when a run starts).

A run slows down many times when other jobs share its cores; the load line in ``log.txt`` says
whether that was the case.
"""

from __future__ import annotations

import os

import torch

__all__ = ["usable_cores", "load_average", "describe", "load_warning"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def describe(device: str | torch.device | None = None) -> str:
    """One line: device (``"auto"``/None: CUDA when available, else CPU), torch's intra-op thread
    count, usable and total cores, load average."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    name = str(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        name += f" ({torch.cuda.get_device_name(dev)})"
    load = load_average()
    return (f"device {name}, torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
            f"{usable_cores()} usable core(s) of {os.cpu_count()}, load average "
            + (f"{load:.2f}" if load is not None else "unknown"))


def load_warning() -> str | None:
    """A warning when the machine's 1-minute load average exceeds its core count (other jobs
    share the cores: expect this run to be several times slower than on a quiet machine), else None."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is None or load <= cores:
        return None
    return (f"machine busy: load average {load:.2f} > {cores} core(s); other processes share the "
            "cores, so this run may be many times slower than on a quiet machine")
