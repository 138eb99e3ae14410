"""MOTChallenge datasets: text-format I/O, lazy sequences, the built-in synthetic MOT17 set."""

from __future__ import annotations

from deepmot.datasets.mot import (
    MOT17_VARIANTS,
    MOTRows,
    SeqInfo,
    discover_sequences,
    half_frame_range,
    read_detections,
    read_gt,
    read_results,
    read_seqinfo,
    split_variant,
    write_detections,
    write_gt,
    write_results,
    write_seqinfo,
)

__all__ = [
    "MOT17_VARIANTS",
    "MOTRows",
    "SeqInfo",
    "discover_sequences",
    "half_frame_range",
    "read_detections",
    "read_gt",
    "read_results",
    "read_seqinfo",
    "split_variant",
    "write_detections",
    "write_gt",
    "write_results",
    "write_seqinfo",
]

__all__ += ["Frame", "Sequence", "SyntheticConfig", "generate_synthetic", "resolve_data_root"]

_LAZY = {"Frame": "sequence", "Sequence": "sequence", "SyntheticConfig": "synthetic",
         "generate_synthetic": "synthetic", "resolve_data_root": "synthetic"}


def __getattr__(name: str):
    """Names that need torch/OpenCV load lazily: reading text files (evaluation workers) stays
    light, and ``python -m deepmot.datasets.synthetic`` runs without a double-import warning."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"deepmot.datasets.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
