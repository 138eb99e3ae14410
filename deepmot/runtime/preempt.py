"""Preemption: SIGTERM / SIGUSR1 ask a training loop to checkpoint and exit cleanly.

A cluster scheduler (SLURM ``--signal=USR1@120``, or the SIGTERM it sends before killing a
preempted job) gets a checkpoint and a clean exit instead of lost work; ``--resume`` then
continues bit for bit. The handler only sets a flag; each loop looks at it where its state is
complete (the DHN and SOT pre-training after every step, DeepMOT between clip batches), writes
``last.pt`` and raises :class:`Preempted`, whose exit status is ``128 + signal`` (143 for
SIGTERM, 138 for SIGUSR1), as if the signal had ended the process.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Callable

__all__ = ["Preempted", "PreemptionGuard"]

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Raised by a loop after it wrote its checkpoint on a preemption signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class PreemptionGuard:
    """Context manager: while active, SIGTERM and SIGUSR1 set :attr:`signum` instead of killing.

    Installed only in the main thread (Python's rule for signal handlers); elsewhere it is a
    no-op whose :attr:`requested` stays False. The previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a preemption signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def check(self, save: Callable[[], None], requested: bool | None = None) -> None:
        """If preemption is requested: call ``save()`` (write the checkpoint), then raise
        :class:`Preempted`. ``requested``: the flag to act on (default :attr:`requested`; a
        distributed loop passes the flag agreed over ranks, so that all stop at the same step)."""
        if self.requested if requested is None else requested:
            save()
            self.restore()
            raise Preempted(self.signum if self.signum is not None else int(signal.SIGTERM))

    def install(self) -> "PreemptionGuard":
        """Catch SIGTERM / SIGUSR1 from now on (main thread only); returns ``self``."""
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old.setdefault(s, signal.signal(s, self._handle))
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def __enter__(self) -> "PreemptionGuard":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
