"""Progress of long loops: a tqdm bar on a terminal, periodic log lines elsewhere.

:func:`progress` wraps an iterable (or counts :meth:`Progress.update` calls) and shows, on rank 0
of a distributed job only:

* a tqdm bar with rate and ETA on stderr when stderr is a terminal;
* otherwise (a log file, a pipe, a batch scheduler's output) one log line at most every
  ``DEEPMOT_PROGRESS_SECONDS`` seconds (default 30) through the ``deepmot.progress`` logger,
  ``desc: n/total (p %) rate, elapsed, ETA``, and a last line when a loop that printed one ends.
  Those lines reach an open run's console and ``log.txt`` (:mod:`deepmot.runtime.run`); with no
  logging configured at all they go to stderr.

``DEEPMOT_PROGRESS=bar|log|off`` overrides the choice (``off``: nothing at all).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["Progress", "progress", "progress_mode", "is_main_process", "ConsoleHandler"]

log = logging.getLogger("deepmot.progress")
_MODES = ("bar", "log", "off")


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun`` or ``srun`` job (``RANK``, which
    :func:`deepmot.runtime.distributed.init_distributed` exports from SLURM's variables), or when
    not distributed."""
    return int(os.environ.get("RANK", "0")) == 0


def progress_mode() -> str:
    """``"bar"`` (stderr is a terminal), ``"log"`` (it is not) or ``"off"`` (ranks other than 0);
    ``DEEPMOT_PROGRESS`` overrides the first two."""
    if not is_main_process():
        return "off"
    forced = os.environ.get("DEEPMOT_PROGRESS", "").strip().lower()
    if forced:
        if forced not in _MODES:
            raise ValueError(f"DEEPMOT_PROGRESS must be one of {_MODES}, got {forced!r}")
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):  # stderr replaced or closed
        return "log"


def _interval() -> float:
    raw = os.environ.get("DEEPMOT_PROGRESS_SECONDS", "30")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"DEEPMOT_PROGRESS_SECONDS must be a number of seconds, got {raw!r}") from None


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of one loop (see the module doc). Iterate over it, or call :meth:`update` and
    :meth:`close` (also a context manager). ``total``: expected count (None: unknown, no ETA);
    ``initial``: count already done (a resumed run); ``unit``: what is counted."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 initial: int = 0, unit: str = "it", leave: bool = True, disable: bool = False):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.mode = "off" if disable else progress_mode()
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, initial=initial, unit=unit, leave=leave,
                             dynamic_ncols=True, file=sys.stderr)
        self._t0 = self._last = time.monotonic()
        self._interval = _interval() if self.mode == "log" else 0.0
        self._lines = 0
        self._n_logged = initial
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("Progress without an iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        if n == 0:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._emit(now)

    def set_postfix_str(self, text: str) -> None:
        """Extra text on the bar (ignored by log lines)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """End the bar; in log mode, a last line if this loop printed any."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self._lines and self.n != self._n_logged:
            self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, final: bool = False) -> None:
        elapsed = now - self._t0
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total:g}" if self.total else f"{self.n}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.1f} %)"
        parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total and not final and rate > 0:
            parts.append(f"ETA {_duration(max(self.total - self.n, 0) / rate)}")
        text = f"{self.desc or 'progress'}{' done' if final else ''}: " + ", ".join(parts)
        self._lines += 1
        self._n_logged = self.n
        if log.isEnabledFor(logging.INFO) and log.hasHandlers():
            log.info(text)
        else:  # nothing configured logging: a plain line, still a sign of life
            print(text, file=sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Progress:
    """:class:`Progress` over ``iterable`` (or to :meth:`~Progress.update` by hand); keyword
    arguments: ``total``, ``desc``, ``initial``, ``unit``, ``leave``, ``disable``."""
    return Progress(iterable, **kwargs)


class ConsoleHandler(logging.StreamHandler):
    """A console log handler that prints above open tqdm bars (``tqdm.write``) instead of
    through them; a plain :class:`logging.StreamHandler` when no bar is open."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        if not getattr(tqdm, "_instances", None):
            return super().emit(record)
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # as logging does: report, never raise from a log call
            self.handleError(record)
