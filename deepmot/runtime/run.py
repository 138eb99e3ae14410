"""Run directories, logging and scalar logs.

A run lives in ``runs/<name>/<YYYYmmdd-HHMMSS>/`` and holds ``config.yaml`` (the resolved
config), ``log.txt`` (everything logged), ``metrics.csv`` (every scalar, long format:
``step,key,value``), TensorBoard event files (when ``tensorboard`` is importable) and
``checkpoints/``. Resuming reopens the same directory and appends.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from deepmot.config import save_config

__all__ = ["Run", "progress", "find_latest_checkpoint", "load_latest_checkpoint", "remove_stale_temp_files",
           "is_main_process"]


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun`` job (or when not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0


def progress(iterable: Iterable | None = None, **kwargs):
    """A tqdm progress bar, silent when stderr is not a TTY or on ranks other than 0."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False) or not sys.stderr.isatty() or not is_main_process()
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


def find_latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``<run_dir>/checkpoints/last.pt`` if present, else the newest ``*.pt`` there, else None."""
    files = _checkpoints_newest_first(run_dir)
    return files[0] if files else None


def _checkpoints_newest_first(run_dir: str | os.PathLike) -> list[Path]:
    ckpt_dir = Path(run_dir) / "checkpoints"
    last = ckpt_dir / "last.pt"
    others = sorted((p for p in ckpt_dir.glob("*.pt") if p.name != "last.pt"),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    return ([last] if last.is_file() else []) + others


def load_latest_checkpoint(run_dir: str | os.PathLike, map_location: Any = "cpu",
                           log: Callable[[str], None] | None = None,
                           required: Iterable[str] = ("model",)) -> tuple[Path, dict] | None:
    """The newest loadable checkpoint of a run: ``last.pt``, else the other ``*.pt`` of
    ``<run_dir>/checkpoints`` (``best.pt``, step checkpoints), newest first.

    A damaged file (truncated, foreign, lacking a ``required`` key) is reported through ``log``
    (naming it and the reason) and the next one is tried. Returns ``(path, state)``, None when the
    run has no checkpoint, and raises :class:`~deepmot.errors.DataFormatError` (one line, naming
    every damaged file) when none of them loads.
    """
    from deepmot.runtime.checkpoint import load_checkpoint
    from deepmot.errors import DataFormatError

    log = log or (lambda msg: None)
    damaged = []
    for path in _checkpoints_newest_first(run_dir):
        try:
            state = load_checkpoint(path, map_location=map_location)
            missing = [k for k in required if not isinstance(state, dict) or k not in state]
            if missing:
                raise DataFormatError(f"not a training checkpoint (no {', '.join(missing)})", path)
        except (DataFormatError, ValueError) as e:
            damaged.append(path.name)
            log(f"skipping a damaged checkpoint: {str(e).splitlines()[0]}")
            continue
        if damaged:
            log(f"resuming from {path.name} instead of the damaged {', '.join(damaged)}")
        return path, state
    if damaged:
        raise DataFormatError(f"--resume: no loadable checkpoint (damaged: {', '.join(damaged)})",
                              Path(run_dir) / "checkpoints")
    return None


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files an interrupted atomic write (:mod:`deepmot.fileio`)
    left in ``folder``; returns what was removed. Only call it when no other process writes there."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class Run:
    """One training or evaluation run: its directory, logger and scalar sinks.

    Create with :meth:`create`. On ranks other than 0 of a distributed job nothing is written:
    the logger only prints warnings and :meth:`log_scalars` is a no-op.
    """

    def __init__(self, run_dir: Path, logger: logging.Logger, main: bool):
        self.dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.logger = logger
        self.main = main
        self._csv_file = None
        self._csv = None
        self._tb = None
        if main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            new = not (run_dir / "metrics.csv").exists()
            self._csv_file = open(run_dir / "metrics.csv", "a", newline="")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(["step", "key", "value", "time"])
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir))
            except Exception:  # tensorboard missing or broken: CSV is enough
                self._tb = None

    @classmethod
    def create(cls, name: str, cfg: Any = None, root: str | os.PathLike = "runs",
               resume: str | os.PathLike | None = None) -> "Run":
        """Start a new run under ``root/name/<time>/`` or reopen ``resume`` (a run directory).

        Saves ``cfg`` (a dataclass) as ``config.yaml`` in a new run. Logging goes to the console
        and to ``log.txt``.
        """
        main = is_main_process()
        if resume is not None:
            run_dir = Path(resume)
            if not run_dir.is_dir():
                raise FileNotFoundError(f"--resume: run directory not found: {run_dir}")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path(root) / name / stamp
            if main:
                # mkdir itself is the test for a free name, so two runs started in the same second
                # (two processes) get "<time>" and "<time>-1" instead of one of them crashing.
                (Path(root) / name).mkdir(parents=True, exist_ok=True)
                k = 1
                while True:
                    try:
                        run_dir.mkdir()
                        break
                    except FileExistsError:
                        run_dir = Path(root) / name / f"{stamp}-{k}"
                        k += 1
                if cfg is not None:
                    save_config(cfg, run_dir / "config.yaml")
        logger = _make_logger(name, run_dir if main else None, main)
        run = cls(run_dir, logger, main)
        logger.info("%s run directory: %s", "resuming" if resume else "new", run_dir)
        if main and resume is not None:  # leftovers of a write that a kill interrupted
            stale = remove_stale_temp_files(run_dir) + remove_stale_temp_files(run.checkpoint_dir)
            if stale:
                logger.info("removed %d temporary file(s) left by an interrupted write: %s", len(stale),
                            ", ".join(p.name for p in stale))
        return run

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Append ``scalars`` at ``step`` to metrics.csv and TensorBoard (rank 0 only)."""
        if not self.main:
            return
        now = f"{time.time():.3f}"
        for key, value in scalars.items():
            value = float(value)
            self._csv.writerow([step, key, repr(value), now])
            if self._tb is not None:
                self._tb.add_scalar(key, value, step)
        self._csv_file.flush()

    def close(self) -> None:
        """Flush and close the scalar sinks and the log file handler."""
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in list(self.logger.handlers):
            if isinstance(h, logging.FileHandler):
                h.close()
                self.logger.removeHandler(h)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_logger(name: str, run_dir: Path | None, main: bool) -> logging.Logger:
    logger = logging.getLogger(f"deepmot.run.{name}")
    logger.setLevel(logging.INFO if main else logging.WARNING)
    logger.propagate = False
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
