"""Checkpoints: dicts of plain types and tensors, written atomically, loadable with weights_only.

A checkpoint written by :func:`save_checkpoint` either appears complete under its name or not at
all: it is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the target with :func:`os.replace`. An interruption mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from deepmot.errors import DataFormatError
from deepmot.fileio import atomic_write
from deepmot.runtime.run import load_latest_checkpoint

__all__ = ["save_checkpoint", "check_finite_state", "load_checkpoint", "torch_load", "training_state",
           "resume_training", "extract_state_dict", "rng_state", "set_rng_state", "atomic_write"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plain types, tensors, nested dicts/lists) to ``path`` atomically.

    Refuses (``FloatingPointError``, nothing written) when ``state["model"]`` holds NaN or inf."""
    if "model" in state:
        check_finite_state(state["model"], f"{path} not written (did the training diverge?)")
    atomic_write(path, lambda f: torch.save(state, f))


def check_finite_state(state: dict[str, Any], what: str) -> None:
    """Raise ``FloatingPointError`` naming ``what`` and the first tensor of ``state`` (a model
    state dict, possibly nested) that holds NaN or inf; a checkpoint of such weights is useless."""
    stack = [("", state)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
        for k, v in items:
            if isinstance(v, torch.Tensor):
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    bad = int((~torch.isfinite(v)).sum())
                    raise FloatingPointError(f"{what}: weight {prefix}{k} holds {bad} NaN/inf value(s)")
            elif isinstance(v, (dict, list, tuple)):
                stack.append((f"{prefix}{k}.", v))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch_load(path, map_location, "not a readable deepmot checkpoint")


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu",
               what: str = "not a readable torch file") -> Any:
    """``torch.load(path, weights_only=True)`` without torch's warnings; a truncated, foreign or
    code-pickling file raises :class:`DataFormatError` ``"<path>: <what> (<reason>)"`` in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, or one holding arbitrary pickled objects
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            reason = "it pickles objects other than tensors and plain types, or is not a torch file"
        else:
            reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise DataFormatError(f"{what} ({type(e).__name__}: {reason})", path) from None


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, **extra: Any) -> dict[str, Any]:
    """The checkpoint of a training loop: ``model`` and ``optimizer`` state dicts, the global RNG
    states (:func:`rng_state`) and the loop's own ``extra`` fields (step, best score, ...)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra}


def resume_training(run_dir: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    map_location: str | torch.device = "cpu", required: bool = False,
                    log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Path] | None:
    """Continue from the newest loadable checkpoint of ``run_dir`` (written with :func:`training_state`).

    Loads the model and optimizer state, restores the global RNGs and returns ``(checkpoint,
    path)`` so the loop can take its own fields; None when the run has no checkpoint yet (an
    error instead when ``required``). A damaged ``last.pt`` falls back to the next newest
    checkpoint, reported through ``log`` (:func:`~deepmot.runtime.run.load_latest_checkpoint`;
    a one-line ``DataFormatError`` when none loads). The one resume path of the DHN, SOT
    pre-training and DeepMOT loops.
    """
    found = load_latest_checkpoint(run_dir, map_location=map_location, log=log,
                                   required=("model", "optimizer", "rng"))
    if found is None:
        if required:
            raise FileNotFoundError(f"--resume: no checkpoint in {Path(run_dir) / 'checkpoints'}")
        return None
    path, ck = found
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"])
    return ck, path


def extract_state_dict(obj: Any, source: str | None = None) -> dict[str, torch.Tensor]:
    """The flat ``{key: tensor}`` model state dict inside a checkpoint-like mapping.

    Unwraps ``{"state_dict": sd}`` (PySOT, DeepMOT) and ``{"model": sd, ...}`` (ours) and drops
    DataParallel/DDP ``module.`` prefixes. Raises :class:`DataFormatError` naming ``source`` (the
    file, if known) when ``obj`` is not a mapping of tensors.
    """
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"expected a state dict (a mapping), got {type(obj).__name__}", source)
    for wrapper in ("state_dict", "model"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise DataFormatError(f"entry {k!r} is a {type(v).__name__}, not a tensor "
                                  "(not a model state dict?)", source)
        state[k[len("module."):] if k.startswith("module.") else k] = v
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) RNG states as plain types and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    random.setstate(_lists_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x):
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x):
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
