"""Atomic file writes: a file appears complete under its name or not at all.

The content goes to a temporary file in the target's folder, is flushed and fsync'ed, then
renamed over the target with :func:`os.replace`; an interruption leaves any previous file intact
and removes the temporary one. The file gets the mode of any newly created file (0644 under the
usual umask 022), so colleagues can read a run. No torch import here, so text readers/writers
stay light.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> None:
    """Call ``write_fn(binary_file)`` on a temp file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 (newlines unchanged) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, exclusive ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 minus the
    umask like any file ``open`` creates (``tempfile.mkstemp`` would make it private, 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")
