"""MOT17 evaluation: official preprocessing, motmetrics accumulation, CLEAR/identity/HOTA, reports."""

from __future__ import annotations

from deepmot.evaluation.accumulate import Matches, accumulate, match_trackeval
from deepmot.evaluation.clear import clear_counts, clear_final
from deepmot.evaluation.evaluator import (
    MODES,
    Conventions,
    Evaluation,
    SequenceResult,
    SequenceTask,
    evaluate_sequence,
    evaluate_task,
    evaluate_tasks,
    summarize,
    tasks_from_folders,
)
from deepmot.evaluation.hota import hota_available
from deepmot.evaluation.identity import identity_counts, identity_final
from deepmot.evaluation.iou import iou_xywh
from deepmot.evaluation.protocol import PROTOCOLS, Protocol, SequenceData, preprocess
from deepmot.evaluation.report import format_report, write_summary

__all__ = [
    "MODES", "PROTOCOLS", "Conventions", "Evaluation", "Matches", "Protocol", "SequenceData",
    "SequenceResult", "SequenceTask", "accumulate", "clear_counts", "clear_final", "evaluate_sequence",
    "evaluate_task", "evaluate_tasks", "format_report", "hota_available", "identity_counts",
    "identity_final", "iou_xywh", "match_trackeval", "preprocess", "summarize", "tasks_from_folders", "write_summary",
]
