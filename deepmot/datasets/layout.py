"""MOTChallenge dataset layout: ``seqinfo.ini``, sequence discovery, detector variants, half splits.

A dataset root holds split folders (``train/``, ``test/``); every folder holding a ``seqinfo.ini``
is a sequence. MOT17 sequences come in public-detector variants (``MOT17-02-DPM`` ...); MOT16/20
names have no suffix. Problems raise :class:`~deepmot.errors.DataFormatError` (file and key) or
:class:`~deepmot.errors.MissingDataError`.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass
from pathlib import Path

from deepmot.errors import DataFormatError, MissingDataError
from deepmot.fileio import atomic_write_text

__all__ = [
    "SeqInfo",
    "read_seqinfo",
    "write_seqinfo",
    "split_variant",
    "discover_sequences",
    "gt_sequences",
    "half_frame_range",
    "MOT17_VARIANTS",
]

#: Public-detector variants of MOT17 sequences (folder name suffixes).
MOT17_VARIANTS = ("DPM", "FRCNN", "SDP")


# --------------------------------------------------------------------------- seqinfo.ini
@dataclass(frozen=True)
class SeqInfo:
    """One sequence as described by its ``seqinfo.ini``.

    ``root`` is the sequence folder; images are ``root / im_dir / f"{frame:06d}{im_ext}"`` for
    frames ``1..seq_length``; ``im_width``/``im_height`` in pixels.
    """

    name: str
    root: Path
    im_dir: str
    frame_rate: float
    seq_length: int
    im_width: int
    im_height: int
    im_ext: str

    def image_path(self, frame: int) -> Path:
        """Path of the image of 1-based ``frame``."""
        return self.root / self.im_dir / f"{int(frame):06d}{self.im_ext}"

    @property
    def gt_path(self) -> Path:
        """``root/gt/gt.txt`` (may not exist, e.g. for test sequences)."""
        return self.root / "gt" / "gt.txt"

    @property
    def det_path(self) -> Path:
        """``root/det/det.txt`` (may not exist)."""
        return self.root / "det" / "det.txt"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(W, H)`` in pixels."""
        return (self.im_width, self.im_height)


def read_seqinfo(seq_dir) -> SeqInfo:
    """Parse ``seq_dir/seqinfo.ini`` into a :class:`SeqInfo`.

    Required keys: ``seqLength``, ``imWidth``, ``imHeight`` (positive integers). Optional, with
    defaults: ``name`` (folder name), ``imDir`` (``img1``), ``frameRate`` (30), ``imExt``
    (``.jpg``). Raises MissingDataError when the file is absent, DataFormatError naming the field
    when a value is missing or invalid.
    """
    seq_dir = Path(seq_dir)
    path = seq_dir / "seqinfo.ini"
    if not path.is_file():
        raise MissingDataError("seqinfo.ini is missing (every MOTChallenge sequence needs one)", path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_bytes().decode("utf-8-sig"), source=str(path))
    except UnicodeDecodeError as e:
        raise DataFormatError(f"not UTF-8 text ({e.reason})", path) from None
    except configparser.Error as e:
        raise DataFormatError(f"not a valid ini file: {e.message}", path) from None
    if not parser.has_section("Sequence"):
        raise DataFormatError("missing section [Sequence]", path, field="Sequence")
    sec = parser["Sequence"]

    def get_int(key: str) -> int:
        if key not in sec:
            raise DataFormatError("required key is missing", path, field=key)
        raw = sec[key].strip()
        try:
            value = int(raw)
        except ValueError:
            raise DataFormatError(f"expected a positive integer, got {raw!r}", path, field=key) from None
        if value <= 0:
            raise DataFormatError(f"expected a positive integer, got {value}", path, field=key)
        return value

    seq_length = get_int("seqLength")
    width = get_int("imWidth")
    height = get_int("imHeight")
    raw_rate = sec.get("frameRate", "30").strip()
    try:
        frame_rate = float(raw_rate)
    except ValueError:
        raise DataFormatError(f"expected a number, got {raw_rate!r}", path, field="frameRate") from None
    if not math.isfinite(frame_rate) or frame_rate <= 0:
        raise DataFormatError(f"expected a positive number, got {raw_rate!r}", path, field="frameRate")
    im_ext = sec.get("imExt", ".jpg").strip()
    if not im_ext.startswith("."):
        im_ext = "." + im_ext
    return SeqInfo(
        name=sec.get("name", seq_dir.name).strip() or seq_dir.name,
        root=seq_dir,
        im_dir=sec.get("imDir", "img1").strip() or "img1",
        frame_rate=frame_rate,
        seq_length=seq_length,
        im_width=width,
        im_height=height,
        im_ext=im_ext,
    )


def write_seqinfo(info: SeqInfo) -> Path:
    """Write ``info.root/seqinfo.ini`` (MOTChallenge key names), atomically. Returns the path."""
    rate = int(info.frame_rate) if float(info.frame_rate).is_integer() else info.frame_rate
    text = (
        "[Sequence]\n"
        f"name={info.name}\nimDir={info.im_dir}\nframeRate={rate}\nseqLength={info.seq_length}\n"
        f"imWidth={info.im_width}\nimHeight={info.im_height}\nimExt={info.im_ext}\n\n"
    )
    path = Path(info.root) / "seqinfo.ini"
    atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------- discovery
def split_variant(name: str) -> tuple[str, str | None]:
    """``"MOT17-02-FRCNN"`` -> ``("MOT17-02", "FRCNN")``; names without a detector suffix
    (MOT16/MOT20 style) -> ``(name, None)``."""
    base, _, suffix = name.rpartition("-")
    if base and suffix in MOT17_VARIANTS:
        return base, suffix
    return name, None


def discover_sequences(root, split: str = "train", detections=None,
                       errors: dict[str, str] | None = None) -> list[SeqInfo]:
    """Sequences of a MOTChallenge dataset, sorted by name.

    ``root``: the dataset folder (holding ``train/`` and ``test/``), or a split folder, or one
    sequence folder. ``split``: ``"train"``, ``"test"`` (or any sub-folder name).
    ``detections``: None keeps every MOT17 variant; a name (``"FRCNN"``) or a list of names keeps
    only those variants. Sequences without a variant suffix (MOT16/MOT20) are always kept.
    Every folder holding a ``seqinfo.ini`` is a sequence. Raises MissingDataError when nothing is
    found, DataFormatError on an unknown variant name. ``errors``: when given, a sequence whose
    ``seqinfo.ini`` is malformed is left out and its message stored under its folder name (so
    one bad sequence does not stop the others); otherwise its DataFormatError is raised.
    """
    root = Path(root)
    if detections is None:
        wanted = None
    else:
        wanted = {detections} if isinstance(detections, str) else set(detections)
        unknown = wanted - set(MOT17_VARIANTS)
        if unknown:
            raise DataFormatError(
                f"unknown detector variant(s) {sorted(unknown)}; known: {list(MOT17_VARIANTS)}",
                field="detections",
            )
    if (root / "seqinfo.ini").is_file():
        seq_dirs = [root]
    else:
        base = root / split if (root / split).is_dir() else root
        if not base.is_dir():
            raise MissingDataError(f"dataset folder not found (looked for split '{split}')", root)
        seq_dirs = sorted(p for p in base.iterdir() if (p / "seqinfo.ini").is_file())
        if not seq_dirs:
            raise MissingDataError(f"no sequence folders (with seqinfo.ini) under {base}", base)
    out = []
    for d in seq_dirs:
        _, variant = split_variant(d.name)
        if wanted is not None and variant is not None and variant not in wanted:
            continue
        try:
            out.append(read_seqinfo(d))
        except DataFormatError as e:
            if errors is None:
                raise
            errors[d.name] = str(e)
    return sorted(out, key=lambda s: s.name)


def gt_sequences(root, split: str = "train", exclude=(), only=None) -> list[tuple[str, SeqInfo]]:
    """``(base name, SeqInfo)`` of the sequences of ``root/split`` that have a ``gt/gt.txt``, one
    variant per base name (the first by name: the MOT17 variants share their GT), without the base
    names in ``exclude`` and, when ``only`` is given, just those. Errors as :func:`discover_sequences`."""
    out, seen = [], set()
    for info in discover_sequences(root, split):
        base, _ = split_variant(info.name)
        if base in seen or base in exclude or (only and base not in only) or not info.gt_path.is_file():
            continue
        seen.add(base)
        out.append((base, info))
    return out


def half_frame_range(seq_length: int, half: str) -> tuple[int, int]:
    """Inclusive 1-based frame range of a half split, following ByteTrack's MOT17 convention.

    With ``m = seq_length // 2``: ``"train-half"`` -> ``(1, m + 1)``, ``"val-half"`` ->
    ``(m + 2, seq_length)``; ``"full"`` -> ``(1, seq_length)``.
    """
    m = int(seq_length) // 2
    if half == "train-half":
        return (1, min(m + 1, seq_length))
    if half == "val-half":
        return (min(m + 2, seq_length), seq_length)
    if half == "full":
        return (1, int(seq_length))
    raise ValueError(f"half must be 'train-half', 'val-half' or 'full', got {half!r}")
