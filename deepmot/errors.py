"""Error types raised where data enters deepmot: they name the file, line and field."""

from __future__ import annotations

__all__ = ["DataFormatError", "MissingDataError"]


class DataFormatError(ValueError):
    """Malformed input data. ``str(err)`` reads ``"<file>:<line>: field '<field>': <message>"``.

    ``path``, ``line`` (1-based, or None for whole-file problems) and ``field`` (or None) are kept
    as attributes so callers can report several errors per file.
    """

    def __init__(self, message: str, path=None, line: int | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class MissingDataError(FileNotFoundError):
    """A file or folder the data layout requires is missing (names the path and what it is)."""

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
