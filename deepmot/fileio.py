"""Atomic file writes: a file appears complete under its name or not at all.

The content goes to a temporary file in the target's folder, is flushed and fsync'ed, then
renamed over the target with :func:`os.replace`; an interruption leaves any previous file intact
and removes the temporary one. No torch import here, so text readers/writers stay light.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> None:
    """Call ``write_fn(binary_file)`` on a temp file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
