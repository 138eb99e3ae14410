"""Run directories, logging and scalar logs.

A run lives in ``runs/<name>/<YYYYmmdd-HHMMSS>/`` and holds ``config.yaml`` (the resolved
config), ``log.txt`` (everything logged), ``metrics.csv`` (every scalar, long format:
``step,key,value``), TensorBoard event files (when ``tensorboard`` is importable) and
``checkpoints/``. Resuming reopens the same directory and appends.

While a run is open, everything the ``deepmot`` and ``trackers`` packages log (the run's own lines,
module loggers such as inference, periodic progress lines, a run started inside it such as the SOT
pre-training of the main job) goes to the console and to its ``log.txt``; every file the run writes
is named there once, with its absolute path (:meth:`Run.wrote`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from deepmot.config import save_config
from deepmot.progress import ConsoleHandler, is_main_process

__all__ = ["Run", "find_latest_checkpoint", "load_latest_checkpoint", "remove_stale_temp_files",
           "is_main_process"]

#: package loggers whose records an open run writes to its console and log.txt
_PACKAGES = ("deepmot", "trackers")
_OPEN_RUNS: "weakref.WeakSet[Run]" = weakref.WeakSet()  # a run dropped without close() stops logging
_WROTE = re.compile(r" wrote [^:]*: (\S+)$")


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

    def __init__(self, run_dir: Path, logger: logging.Logger, main: bool,
                 file_handler: logging.Handler | None = None):
        self.dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.logger = logger
        self.main = main
        self._file_handler = file_handler
        self._named: set[str] = set()
        self._csv_file = None
        self._csv = None
        self._tb = None
        _OPEN_RUNS.add(self)
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
               resume: str | os.PathLike | None = None,
               device: Any = None) -> "Run":
        """Start a new run under ``root/name/<time>/`` or reopen ``resume`` (a run directory).

        Saves ``cfg`` (a dataclass) as ``config.yaml`` in a new run. Logging goes to the console
        and to ``log.txt``; the first lines say the device (``device``: a ``torch.device`` or its
        name, ``"auto"``/None = CUDA when available, else CPU), torch's
        thread count, the cores and the load average, with a warning when the load exceeds the
        cores. The directory is absolute.
        """
        main = is_main_process()
        if resume is not None:
            run_dir = Path(resume).absolute()
            if not run_dir.is_dir():
                raise FileNotFoundError(f"--resume: run directory not found: {run_dir}")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            root = Path(root).absolute()
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
        logger, fh = _make_logger(name, run_dir if main else None, main)
        run = cls(run_dir, logger, main, fh)
        logger.info("%s run directory: %s", "resuming" if resume else "new", run_dir)
        if main:
            from deepmot.machine import describe, load_warning

            if resume is not None:  # files named in earlier sessions of this run stay named
                log_txt = (run_dir / "log.txt").read_text(errors="replace").splitlines()
                run._named.update(m.group(1) for m in map(_WROTE.search, log_txt) if m)
            for what, path in (("config", run_dir / "config.yaml"), ("log", run_dir / "log.txt"),
                               ("scalars", run_dir / "metrics.csv"), ("TensorBoard events", run._tb_file())):
                if path is not None and path.is_file():
                    run.wrote(path, what)
            logger.info("%s", describe(device))
            busy = load_warning()
            if busy:
                logger.warning("%s", busy)
        if main and resume is not None:  # leftovers of a write that a kill interrupted
            stale = remove_stale_temp_files(run_dir) + remove_stale_temp_files(run.checkpoint_dir)
            if stale:
                logger.info("removed %d temporary file(s) left by an interrupted write: %s", len(stale),
                            ", ".join(p.name for p in stale))
        return run

    def wrote(self, path: str | os.PathLike, what: str = "file") -> None:
        """Log ``wrote <what>: <absolute path>`` the first time this run names ``path``
        (later writes of the same file, e.g. a checkpoint, stay quiet)."""
        full = str(Path(path).absolute())
        if self.main and full not in self._named:
            self._named.add(full)
            self.logger.info("wrote %s: %s", what, full)

    def _tb_file(self) -> Path | None:
        """The TensorBoard event file this run's writer opened (None without TensorBoard)."""
        if self._tb is None:
            return None
        try:
            return Path(self._tb._get_file_writer().event_writer._file_name)
        except AttributeError:  # another tensorboard version: the newest event file
            files = sorted(self.dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
            return files[-1] if files else None

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
        _OPEN_RUNS.discard(self)
        if self._file_handler is not None:
            for pkg in _PACKAGES:
                logging.getLogger(pkg).removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
        if not _OPEN_RUNS:  # the last open run: the packages log as before
            for pkg in _PACKAGES:
                pkg_logger = logging.getLogger(pkg)
                pkg_logger.setLevel(logging.NOTSET)
                for h in list(pkg_logger.handlers):
                    if getattr(h, "_deepmot_console", False):
                        pkg_logger.removeHandler(h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: logging may be gone already
            pass

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_logger(name: str, run_dir: Path | None,
                 main: bool) -> tuple[logging.Logger, logging.Handler | None]:
    """The run's logger (it propagates to the package loggers) and the ``log.txt`` handler added
    to the ``deepmot`` and ``trackers`` package loggers, beside one console handler shared by all
    open runs (a run inside a run writes to both log files and once to the console)."""
    logger = logging.getLogger(f"deepmot.run.{name}")
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    fh = None
    if run_dir is not None:
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(fmt)
    for pkg in _PACKAGES:
        pkg_logger = logging.getLogger(pkg)
        pkg_logger.setLevel(logging.INFO if main else logging.WARNING)
        for h in list(pkg_logger.handlers):  # one console handler, on today's stderr
            if getattr(h, "_deepmot_console", False):
                pkg_logger.removeHandler(h)
        console = ConsoleHandler(sys.stderr)
        console.setFormatter(fmt)
        console._deepmot_console = True  # type: ignore[attr-defined]
        pkg_logger.addHandler(console)
        if fh is not None:
            pkg_logger.addHandler(fh)
    return logger, fh
