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

from deepmot.datasets.sequence import Frame, Sequence  # noqa: E402

__all__ += ["Frame", "Sequence", "SyntheticConfig", "generate_synthetic", "resolve_data_root"]

_SYNTHETIC = {"SyntheticConfig", "generate_synthetic", "resolve_data_root"}


def __getattr__(name: str):
    """Synthetic-set names load lazily, so ``python -m deepmot.datasets.synthetic`` runs cleanly."""
    if name in _SYNTHETIC:
        from deepmot.datasets import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
