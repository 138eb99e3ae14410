"""Run a multi-object tracker over MOTChallenge sequences: result files, timing, evaluation.

:func:`run_inference` feeds every frame (image + public detections) of each sequence to a fresh
per-sequence tracker and writes ``<out_dir>/<sequence>.txt`` (MOTChallenge format, via
:func:`deepmot.datasets.mot.write_results`). :func:`evaluate_results` scores those files with
:mod:`deepmot.evaluation` (frame ranges such as the ``val-half`` split included), and
:func:`evaluate_tracker` does both and returns the summary dict (MOTA, IDF1, HOTA, IDSW, FPS...).

The tracker is a per-sequence factory ``f(seq_info) -> SequenceTracker`` (the inference
protocol, :mod:`deepmot.engine.protocol`) whose product has ``step(image, det_boxes, det_scores,
frame)`` (detections ``(D, 4)`` xyxy pixels), ``results()`` returning ``(frame, ids, xywh, conf)``
arrays and optionally a ``timing`` dict (``"sot"``, ``"assoc"`` seconds), e.g. the plugin's
``build_inference`` output (``trackers.multi.build_mot_factory``). The engine imports no tracker.
:func:`run_inference_parallel` spreads the sequences over worker processes, each building its own
factory from a picklable builder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from deepmot.datasets.mot import SeqInfo, read_seqinfo, write_results
from deepmot.datasets.sequence import Sequence, resolve_frame_range
from deepmot.engine.protocol import SequenceFactory
from deepmot.evaluation import MODES, Conventions, Evaluation, SequenceTask, evaluate_tasks
from deepmot.progress import progress

__all__ = ["SequenceTiming", "InferenceOutput", "open_sequences", "run_inference", "run_inference_parallel",
           "default_worker_threads", "evaluate_results", "evaluate_tracker", "format_timing", "write_speed"]

log = logging.getLogger(__name__)


@dataclass
class SequenceTiming:
    """Seconds spent on one sequence: ``total`` (wall, whole loop), ``sot`` (SOT steps and
    template work), ``assoc`` (association and track management), ``io`` (image decoding and
    detection lookup), for ``frames`` frames."""

    frames: int
    total: float
    sot: float
    assoc: float
    io: float

    @property
    def fps(self) -> float:
        """Frames per second of the tracker (``frames / (sot + assoc)``, image decoding excluded)."""
        busy = self.sot + self.assoc
        return self.frames / busy if busy > 0 else float("inf")


@dataclass
class InferenceOutput:
    """``paths``: sequence name -> result file; ``timing``: name -> :class:`SequenceTiming`;
    ``frame_range``: the range the sequences were run on (None: whole sequences)."""

    paths: dict[str, Path] = field(default_factory=dict)
    timing: dict[str, SequenceTiming] = field(default_factory=dict)
    frame_range: Any = None

    def total(self) -> SequenceTiming:
        """Timing summed over sequences."""
        t = list(self.timing.values())
        return SequenceTiming(sum(x.frames for x in t), sum(x.total for x in t), sum(x.sot for x in t),
                              sum(x.assoc for x in t), sum(x.io for x in t))

    def speed(self) -> dict:
        """Plain dict of the timing (per sequence and ``TOTAL``) with ``fps``; for JSON reports."""
        rows = dict(self.timing)
        rows["TOTAL"] = self.total()
        return {n: {**asdict(t), "fps": t.fps} for n, t in rows.items()}


def open_sequences(sequences: Iterable[Any], frame_range: Any = None) -> list[Sequence]:
    """:class:`Sequence` objects (with images and ``det/det.txt``) from ``SeqInfo``s, sequence
    folders or ready ``Sequence``s (kept as they are). ``frame_range`` as in :class:`Sequence`."""
    out = []
    for s in sequences:
        out.append(s if isinstance(s, Sequence) else Sequence(s, frame_range=frame_range))
    return out


def _check_factory(factory: Any) -> SequenceFactory:
    if not callable(factory):
        raise TypeError(f"expected a per-sequence tracker factory f(seq_info), got {type(factory).__name__}")
    return factory


def run_inference(factory: SequenceFactory, sequences: Iterable[Any], out_dir: str | Path = "results", *,
                  frame_range: Any = None, show_progress: bool = True) -> InferenceOutput:
    """Track every sequence with a fresh tracker from ``factory`` and write ``out_dir/<name>.txt``.

    ``sequences``: ``SeqInfo``s, folders or :class:`Sequence`\\ s. Runs under ``torch.no_grad``.
    Returns the result paths and per-sequence :class:`SequenceTiming`.
    """
    return _run(_check_factory(factory), sequences, Path(out_dir), frame_range, show_progress)


def _run(factory: Callable[[Any], Any], sequences: Iterable[Any], out_dir: Path, frame_range: Any,
         show_progress: bool) -> InferenceOutput:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = InferenceOutput(frame_range=frame_range)
    for seq in progress(open_sequences(sequences, frame_range), desc="tracking", unit="seq",
                        disable=not show_progress):
        path, timing, n_tracks = _track_sequence(factory, seq, out_dir, show_progress)
        result.paths[seq.name] = path
        result.timing[seq.name] = timing
        _log_sequence(seq.name, timing, n_tracks, path)
    return result


def _track_sequence(factory: Callable[[Any], Any], seq: Sequence, out_dir: Path,
                    show_progress: bool) -> tuple[Path, SequenceTiming, int]:
    """Track one sequence with a fresh tracker from ``factory``; write ``out_dir/<name>.txt``.
    Returns the path, the timing and the number of distinct track ids written."""
    mot = factory(seq.info)
    t_start = time.perf_counter()
    io = 0.0
    with torch.no_grad():
        for i in progress(range(len(seq)), desc=f"tracking {seq.name}", unit="frame", leave=False,
                          disable=not show_progress):
            t0 = time.perf_counter()
            frame = seq[i]
            io += time.perf_counter() - t0
            mot.step(frame.image, frame.det_boxes, frame.det_scores, frame.index)
    frames, ids, xywh, conf = mot.results()
    path = out_dir / f"{seq.name}.txt"
    write_results(path, frames, ids, xywh, conf)
    timing = getattr(mot, "timing", {})
    t = SequenceTiming(len(seq), time.perf_counter() - t_start, float(timing.get("sot", 0.0)),
                       float(timing.get("assoc", 0.0)), io)
    return path, t, int(len(np.unique(ids)))


def _log_sequence(name: str, t: SequenceTiming, n_tracks: int, path: Path) -> None:
    log.info(f"{name}: {t.frames} frames, {n_tracks} tracks, {t.fps:.1f} frames/s "
             f"(SOT {t.sot:.2f} s, association {t.assoc:.2f} s, images {t.io:.2f} s) -> {Path(path).absolute()}")


# --------------------------------------------------------------------------- parallel inference
_WORKER_FACTORY: Callable[[Any], Any] | None = None


def _init_worker(build: Callable[[], Any], threads: int) -> None:
    """Worker process start: set torch's thread count, build the tracker factory once."""
    global _WORKER_FACTORY
    torch.set_num_threads(threads)
    _WORKER_FACTORY = _check_factory(build())


def _worker_track(info: Any, frame_range: Any, out_dir: Path) -> tuple[str, Path, SequenceTiming, int]:
    assert _WORKER_FACTORY is not None, "worker not initialised"
    seq = open_sequences([info], frame_range)[0]
    return (seq.name, *_track_sequence(_WORKER_FACTORY, seq, out_dir, False))


def default_worker_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers * threads`` does not exceed the usable cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def run_inference_parallel(build: Callable[[], Any], sequences: Iterable[Any], out_dir: str | Path = "results", *,
                           workers: int = 2, threads: int | None = None, frame_range: Any = None,
                           show_progress: bool = True) -> InferenceOutput:
    """:func:`run_inference` with sequences spread over ``workers`` processes (spawned).

    ``build``: a picklable zero-argument callable returning a per-sequence factory, e.g.
    ``functools.partial(trackers.multi.build_mot_factory, cfg, checkpoint)``; each worker calls it
    once. ``threads``: torch threads per worker (default :func:`default_worker_threads`).
    ``sequences``: ``SeqInfo`` objects or folders. Every sequence gets a fresh tracker as in the serial
    loop, so the result files equal :func:`run_inference`'s when the thread counts match.
    Paths and timings come back in the order of ``sequences``.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    infos = [s.info if isinstance(s, Sequence) else s for s in sequences]
    result = InferenceOutput(frame_range=frame_range)
    if not infos:
        return result
    workers = max(1, min(int(workers), len(infos)))
    threads = threads or default_worker_threads(workers)
    ctx = mp.get_context("spawn")  # no fork after torch started its thread pools (or CUDA)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(build, threads)) as pool:
        futures = [pool.submit(_worker_track, info, frame_range, out_dir) for info in infos]
        for fut in progress(futures, desc="tracking", unit="seq", disable=not show_progress):
            name, path, timing, n_tracks = fut.result()
            result.paths[name] = path
            result.timing[name] = timing
            _log_sequence(name, timing, n_tracks, path)
    return result


def evaluate_results(paths: dict[str, Path], sequences: Iterable[Any], frame_range: Any = None,
                     protocol: str = "mot17", conv: Conventions = MODES["official"], hota: bool = True,
                     workers: int = 1) -> Evaluation:
    """Score result files ``{name: path}`` against the GT of ``sequences`` (``SeqInfo``s, folders or
    ``Sequence``\\ s, whose own frame range then counts) restricted to ``frame_range`` (as in
    :class:`Sequence`; None: whole sequences), in ``workers`` processes
    (:func:`deepmot.evaluation.evaluate_tasks`). Sequences without GT or with malformed files
    are reported in ``Evaluation.errors``."""
    tasks = []
    for seq in sequences:
        if isinstance(seq, Sequence):
            info, window = seq.info, (seq.start, seq.end)
        else:
            info = seq if isinstance(seq, SeqInfo) else read_seqinfo(seq)
            window = resolve_frame_range(frame_range, info.seq_length)
        if info.name in paths:
            frames = None if window == (1, info.seq_length) else window
            tasks.append(SequenceTask(info.name, str(info.gt_path), str(paths[info.name]), info.seq_length, frames))
    return evaluate_tasks(tasks, protocol, conv, workers=workers, hota=hota)


def format_timing(out: InferenceOutput) -> str:
    """A table of tracker speed per sequence: frames, frames/s, SOT and association seconds."""
    lines = [f"{'Speed':<24}{'frames':>8}{'FPS':>9}{'SOT s':>9}{'assoc s':>9}{'images s':>10}{'wall s':>9}"]
    for name, t in out.speed().items():
        lines.append(f"{name:<24}{t['frames']:>8d}{t['fps']:>9.1f}{t['sot']:>9.2f}{t['assoc']:>9.2f}"
                     f"{t['io']:>10.2f}{t['total']:>9.2f}")
    return "\n".join(lines)


def evaluate_tracker(factory: SequenceFactory, sequences: Iterable[Any], out_dir: str | Path = "results", *,
                     frame_range: Any = None, protocol: str = "mot17", conv: Conventions = MODES["official"],
                     hota: bool = True, show_progress: bool = True) -> dict:
    """Run :func:`run_inference` then :func:`evaluate_results`; returns the COMBINED metrics as a
    flat dict (``MOTA``, ``IDF1``, ``HOTA``, ``IDSW``, ``FP``, ``FN``... as fractions/counts) plus
    ``FPS`` (tracker frames/s), ``sot_seconds``, ``assoc_seconds``, ``frames`` and ``errors``
    (sequences that could not be scored, name -> message)."""
    seqs = list(sequences)
    out = run_inference(factory, seqs, out_dir, frame_range=frame_range, show_progress=show_progress)
    ev = evaluate_results(out.paths, seqs, frame_range, protocol, conv, hota)
    tot = out.total()
    summary = dict(ev.combined)
    summary.update({"FPS": tot.fps, "sot_seconds": tot.sot, "assoc_seconds": tot.assoc, "frames": tot.frames,
                    "errors": dict(ev.errors)})
    return summary


def write_speed(out: InferenceOutput, summary_json: str | Path) -> None:
    """Add the tracker speed (``"tracker_speed"``: per sequence and TOTAL frames, fps, SOT /
    association / image seconds) to an existing ``summary.json``, atomically."""
    import json

    from deepmot.fileio import atomic_write_text

    path = Path(summary_json)
    data = json.loads(path.read_text())
    data["tracker_speed"] = out.speed()
    text = json.dumps(data, indent=2, allow_nan=True) + "\n"
    atomic_write_text(path, text)
