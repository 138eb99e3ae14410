"""Evaluate tracker result files against MOTChallenge GT: per sequence, combined, in parallel.

One sequence: read files (:mod:`deepmot.datasets.mot`) -> official preprocessing
(:mod:`.protocol`) -> matching + ``MOTAccumulator`` (:mod:`.accumulate`) -> CLEAR counts
(:mod:`.clear`), identity counts (:mod:`.identity`), HOTA (:mod:`.hota`), motmetrics'
``compute`` on the accumulator. Sequences run in worker processes when ``workers > 1``; a
malformed file fails only its own sequence (its error, with file and line, is reported).

Conventions (:data:`MODES`): ``"official"`` reproduces TrackEval exactly (matching rule, MT
``> 0.8``, TrackEval fragmentation, ratios with TrackEval's formulas); ``"motmetrics"``
reproduces py-motmetrics 1.4.0 (its matching, MT ``>= 0.8``, its fragmentation, and its own
values for MOTA, IDF1, IDP, IDR, Rcll, Prcn). MOTP is always reported twice: ``MOTP`` = mean
IoU of the matches (TrackEval's definition, higher is better) and ``MOTP_dist`` = motmetrics'
``motp``, the mean distance ``1 - IoU`` (lower is better).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import motmetrics as mm

from deepmot.datasets.mot import read_gt, read_results
from deepmot.errors import DataFormatError, MissingDataError
from deepmot.evaluation.accumulate import MATCHING_RULES, accumulate
from deepmot.evaluation.clear import FRAG_RULES, MT_RULES, clear_counts, clear_final
from deepmot.evaluation.hota import hota_combine, hota_sequence, hota_summary
from deepmot.evaluation.identity import identity_counts, identity_final
from deepmot.evaluation.protocol import PROTOCOLS, Protocol, SequenceData, preprocess
from deepmot.progress import progress

__all__ = [
    "Conventions",
    "MODES",
    "SequenceTask",
    "SequenceResult",
    "Evaluation",
    "evaluate_sequence",
    "evaluate_task",
    "evaluate_tasks",
    "summarize",
    "tasks_from_folders",
]

_MM_COUNTS = ["num_detections", "num_switches", "num_false_positives", "num_misses", "num_objects",
              "motp", "num_transfer", "num_ascend", "num_migrate"]
_MM_RATIOS = ["mota", "idf1", "idp", "idr", "recall", "precision"]
_MM_TO_OURS = {"mota": "MOTA", "idf1": "IDF1", "idp": "IDP", "idr": "IDR", "recall": "Rcll",
               "precision": "Prcn", "motp": "MOTP_dist", "num_transfer": "IDt", "num_ascend": "IDa",
               "num_migrate": "IDm"}


@dataclass(frozen=True)
class Conventions:
    """Where TrackEval and motmetrics differ: per-frame ``matching`` rule (``"trackeval"`` |
    ``"motmetrics"``), mostly-tracked rule ``mt`` (``"gt"``: > 80 %, ``"ge"``: >= 80 %),
    fragmentation ``frag`` (``"trackeval"`` | ``"motmetrics"``). With ``matching="motmetrics"``
    the ratios MOTA/IDF1/IDP/IDR/Rcll/Prcn are motmetrics' own values."""

    matching: str = "trackeval"
    mt: str = "gt"
    frag: str = "trackeval"

    def __post_init__(self):
        for value, allowed, what in ((self.matching, MATCHING_RULES, "matching"), (self.mt, MT_RULES, "mt"),
                                     (self.frag, FRAG_RULES, "frag")):
            if value not in allowed:
                raise ValueError(f"unknown {what} convention {value!r}; choose from {allowed}")

    @property
    def name(self) -> str:
        for k, v in MODES.items():
            if v == self:
                return k
        return "custom"

    def describe(self) -> dict:
        """Human-readable statement of each convention (goes into every report)."""
        return {
            "mode": self.name,
            "matching": {"trackeval": "TrackEval: continue previous-timestep id, then Hungarian on IoU>=0.5",
                         "motmetrics": "motmetrics: re-establish last match (any gap), then LAP on 1-IoU<=0.5"
                         }[self.matching],
            "mostly_tracked": "tracked ratio > 0.8 (TrackEval)" if self.mt == "gt" else "tracked ratio >= 0.8 (motmetrics)",
            "fragmentation": {"trackeval": "TrackEval: (re)starts of tracking - 1",
                              "motmetrics": "motmetrics: tracked->missed transitions inside the tracked span"
                              }[self.frag],
            "ratios": "motmetrics values" if self.matching == "motmetrics" else "TrackEval formulas",
            "MOTP": "mean IoU of matches (TrackEval, higher is better)",
            "MOTP_dist": "motmetrics motp: mean 1-IoU of matches (lower is better)",
        }


MODES: dict[str, Conventions] = {
    "official": Conventions("trackeval", "gt", "trackeval"),
    "motmetrics": Conventions("motmetrics", "ge", "motmetrics"),
}


@dataclass(frozen=True)
class SequenceTask:
    """One sequence to evaluate: GT file, result file, ``num_frames`` (seqLength; None = from files)
    and ``frames``: an inclusive 1-based ``(start, end)`` window scored alone, renumbered from 1
    (e.g. the ``val-half`` split; None = the whole sequence)."""

    name: str
    gt_path: str
    results_path: str
    num_frames: int | None = None
    frames: tuple[int, int] | None = None


@dataclass
class SequenceResult:
    """Per-sequence partial results (picklable): integer counts, motmetrics' cached partial,
    TrackEval's HOTA result, run time, or the error that stopped this sequence."""

    name: str
    counts: dict = field(default_factory=dict)
    mm_partial: dict | None = None
    hota: dict | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Evaluation:
    """All results: ``sequences`` (name -> metrics), ``combined`` metrics (over the sequences that
    were evaluated), ``errors`` (name -> message), timings and the conventions used."""

    sequences: dict
    combined: dict
    errors: dict
    seconds: dict
    wall_seconds: float
    conventions: dict
    protocol: str
    workers: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _mm_metrics(conv: Conventions) -> list[str]:
    return _MM_COUNTS + (_MM_RATIOS if conv.matching == "motmetrics" else [])


def evaluate_sequence(seq: SequenceData, conv: Conventions = MODES["official"], hota: bool = True,
                      mh=None) -> SequenceResult:
    """Score one preprocessed sequence -> :class:`SequenceResult` (counts, motmetrics partial, HOTA)."""
    t0 = time.perf_counter()
    acc, matches = accumulate(seq, conv.matching)
    counts = clear_counts(matches, conv.mt, conv.frag)
    counts.update(identity_counts(seq))
    counts.update({"GT_Dets": seq.num_gt_dets, "Dets": seq.num_tracker_dets, "GT_IDs": seq.num_gt_ids,
                   "IDs": seq.num_tracker_ids, "Removed": seq.num_removed})
    mh = mh or mm.metrics.create()
    partial = mh.compute(acc, metrics=_mm_metrics(conv), return_cached=True, return_dataframe=False)
    for ours, theirs in (("TP", "num_detections"), ("FP", "num_false_positives"), ("FN", "num_misses"),
                         ("IDSW", "num_switches")):
        if int(partial[theirs]) != counts[ours]:  # the accumulator and our record must agree
            raise RuntimeError(f"{seq.name}: {ours}={counts[ours]} but motmetrics {theirs}={partial[theirs]}")
    hres = hota_sequence(seq) if hota else None
    return SequenceResult(seq.name, counts, partial, hres, time.perf_counter() - t0)


def frame_window(rows, start: int, end: int):
    """The rows (``MOTRows``) of frames ``start..end``, renumbered to start at 1."""
    rows = rows.select((rows.frame >= start) & (rows.frame <= end))
    rows.frame = rows.frame - (start - 1)
    return rows


def evaluate_task(task: SequenceTask, protocol: Protocol | str = "mot17",
                  conv: Conventions = MODES["official"], hota: bool = True) -> SequenceResult:
    """Read, preprocess and score one sequence; data errors become ``SequenceResult.error``."""
    t0 = time.perf_counter()
    try:
        gt = read_gt(task.gt_path, task.num_frames)
        res = read_results(task.results_path, task.num_frames)
        n = task.num_frames
        if task.frames is not None:
            start, end = task.frames
            gt, res, n = frame_window(gt, start, end), frame_window(res, start, end), end - start + 1
        seq = preprocess(task.name, gt, res, n, protocol)
    except (DataFormatError, MissingDataError) as e:
        return SequenceResult(task.name, seconds=time.perf_counter() - t0, error=str(e))
    out = evaluate_sequence(seq, conv, hota)
    out.seconds = time.perf_counter() - t0
    return out


def _final(counts: dict, mm_values: dict | None, hres: dict | None, conv: Conventions) -> dict:
    out = hota_summary(hres)
    out.update(clear_final(counts))
    out.update(identity_final(counts))
    if mm_values is not None:
        for theirs, ours in _MM_TO_OURS.items():
            if theirs in mm_values:
                out[ours] = float(mm_values[theirs])
    out.update(counts)
    out.pop("MOTP_sum", None)
    return out


def _sum_counts(results: list[SequenceResult]) -> dict:
    total: dict = {}
    for r in results:
        for k, v in r.counts.items():
            total[k] = total.get(k, 0) + v
    return total


def summarize(results: list[SequenceResult], conv: Conventions = MODES["official"],
              hota: bool = True) -> tuple[dict, dict]:
    """Final metrics of evaluated sequences -> ``({name: metrics}, combined metrics)``.

    COMBINED is TrackEval's: counts summed over sequences, ratios recomputed (HOTA per alpha, then
    averaged); motmetrics' values come from its ``compute_overall``, except ``motp``: the
    match-weighted mean over the sequences that have matches (motmetrics multiplies a match-less
    sequence's NaN by 0 and gets NaN; NaN when no sequence has a match).
    """
    sequences = {r.name: _final(r.counts, r.mm_partial, r.hota, conv) for r in results}
    if not results:
        return sequences, {}
    overall = mm.metrics.create().compute_overall([r.mm_partial for r in results], metrics=_mm_metrics(conv),
                                                  return_dataframe=False)
    matched = [(float(r.mm_partial["motp"]), int(r.mm_partial["num_detections"])) for r in results
               if int(r.mm_partial["num_detections"]) > 0]
    n_matched = sum(n for _, n in matched)
    overall["motp"] = sum(m * n for m, n in matched) / n_matched if n_matched else float("nan")
    hres = hota_combine([r.hota for r in results]) if hota else None
    return sequences, _final(_sum_counts(results), overall, hres, conv)


def evaluate_tasks(tasks: list[SequenceTask], protocol: Protocol | str = "mot17",
                   conv: Conventions = MODES["official"], workers: int = 1, hota: bool = True) -> Evaluation:
    """Evaluate many sequences (in ``workers`` processes when > 1) and combine them
    (:func:`summarize`); sequences whose files are malformed are listed in ``errors``."""
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol]
    t0 = time.perf_counter()
    if workers > 1 and len(tasks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx) as pool:
            futures = [pool.submit(evaluate_task, t, protocol, conv, hota) for t in tasks]
            results = [f.result() for f in progress(futures, desc="scoring", unit="seq")]
    else:
        results = [evaluate_task(t, protocol, conv, hota) for t in progress(tasks, desc="scoring", unit="seq")]
    sequences, combined = summarize([r for r in results if r.error is None], conv, hota)
    return Evaluation(
        sequences=sequences,
        combined=combined,
        errors={r.name: r.error for r in results if r.error is not None},
        seconds={r.name: r.seconds for r in results},
        wall_seconds=time.perf_counter() - t0,
        conventions=conv.describe(),
        protocol=protocol.describe(),
        workers=workers,
    )


def tasks_from_folders(results_dir, sequences, names: list[str] | None = None,
                       bad_sequences: dict[str, str] | None = None) -> tuple[list[SequenceTask], dict]:
    """Pair ``results_dir/<name>.txt`` with GT sequences (``SeqInfo`` list).

    ``names``: sequences to evaluate (default: every result file and every GT sequence, as
    TrackEval's sequence map does). ``bad_sequences``: name -> message of GT sequences that could
    not be read (their ``seqinfo.ini``). Returns ``(tasks, errors)`` where errors name result files
    without GT, GT sequences (or requested ones) without a result file, and the bad sequences.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise MissingDataError("results folder not found", results_dir)
    by_name = {s.name: s for s in sequences}
    bad = dict(bad_sequences or {})
    files = {p.stem: p for p in sorted(results_dir.glob("*.txt"))}
    wanted = names if names is not None else sorted(set(files) | set(by_name) | set(bad))
    tasks, errors = [], {}
    for n in wanted:
        if n in bad:
            errors[n] = bad[n]
        elif n not in files:
            hint = "" if names is not None else " (name the sequences to evaluate with --seqs)"
            errors[n] = str(MissingDataError(f"no result file for this sequence{hint}", results_dir / f"{n}.txt"))
        elif n not in by_name:
            errors[n] = str(MissingDataError("no GT sequence of this name in the data root", files[n]))
        else:
            s = by_name[n]
            tasks.append(SequenceTask(n, str(s.gt_path), str(files[n]), s.seq_length))
    return tasks, errors
