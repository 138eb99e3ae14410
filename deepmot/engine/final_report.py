"""Validation, model selection and the final report of a DeepMOT fine-tuning run.

The loop validates on ``cfg.validation`` (the synthetic set's ``val/`` split, MOT17's second
halves) and never reads the test split while it trains. Selection treats the starting tracker
(the evaluation at step 0) as a candidate like any later one, so a run hands back
(``siamrpn_deepmot.pth``) the model that validates best by ``best_metric`` — the start itself
when fine-tuning did not beat it. The final report then shows, on the validation split:

* ``start``: the starting tracker (step 0);
* ``shipped``: the weights the tracker ships for this model (its optional
  :meth:`~deepmot.engine.protocol.TrainableTracker.shipped_state`; SiamRPN: the tiny synthetic
  weights), when it has any that fit;
* ``after``: the model after the last fine-tuning step;

then which model was handed back and, once, that model on the test split (``cfg.test``;
``None`` skips it, e.g. MOT17 whose test split has no GT). It is logged as a table (ratios in
percent, :func:`deepmot.evaluation.report.format_metric`) with the ``before``/``after`` lines, and
written to ``report.json`` (fractions, as ``evaluate.py``'s JSON). The engine imports no tracker:
everything tracker-specific comes through the trainable tracker.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from deepmot.evaluation.report import PERCENT_FIELDS, format_metric
from deepmot.fileio import atomic_write_text
from deepmot.runtime.checkpoint import load_checkpoint

__all__ = ["evaluate_split", "choose_and_report", "format_report", "REPORT_KEYS"]

#: columns of the report table
REPORT_KEYS = ("MOTA", "IDF1", "HOTA", "MOTP", "IDSW", "FP", "FN")


def evaluate_split(factory: Any, data_root: Path, vcfg: Any, out_dir: Path) -> dict:
    """Multi-object inference with public detections (``factory``: a tracker's
    :meth:`~deepmot.engine.protocol.TrainableTracker.sequence_factory`) + official evaluation on
    the sequences ``vcfg`` (a ``ValidationConfig``: split, frames, detections, max_sequences) names
    under ``data_root``; result files go to ``out_dir``. Returns the flat metrics dict of
    :func:`deepmot.engine.inference.evaluate_tracker` (fractions and counts)."""
    from deepmot.datasets import discover_sequences
    from deepmot.engine.inference import evaluate_tracker

    seqs = discover_sequences(data_root, vcfg.split, detections=vcfg.detections or None)
    if vcfg.max_sequences is not None:
        seqs = seqs[:vcfg.max_sequences]
    frames = None if vcfg.frames == "full" else vcfg.frames
    return evaluate_tracker(factory, seqs, out_dir, frame_range=frames, show_progress=True)


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


def _fmt(metrics: dict | None, key: str) -> str:
    v = None if metrics is None else metrics.get(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format_metric(key, v)


def format_report(report: dict) -> list[str]:
    """The report as text lines: a table (percent for MOTA/IDF1/HOTA/MOTP, counts otherwise) with
    the validation rows, the hand-back decision, the test row and the ``before``/``after`` lines
    (start and last step)."""
    head = f"{'':30s}" + "".join(f"{k:>9s}" for k in REPORT_KEYS)
    lines = [f"final report — validation ({report['validation']}; ratios in %):", head]
    for row in report["rows"]:
        label = f"  {row['label']}"
        if row.get("note"):
            label += f" ({row['note']})"
        cells = "".join(f"{_fmt(row.get('metrics'), k):>9s}" for k in REPORT_KEYS)
        lines.append(f"{label:30.30s}{cells}" if row.get("metrics") else f"{label}: {row.get('why', '-')}")
    lines.append(f"handed back: {report['handed_back']}")
    if report.get("test") is not None:
        lines.append(f"test ({report['test_split']}), measured once, handed-back model:")
        cells = "".join(f"{_fmt(report['test'], k):>9s}" for k in REPORT_KEYS)
        lines.append(f"{'  test':30s}{cells}")
    b, a = report["rows"][0].get("metrics") or {}, report["rows"][-1].get("metrics") or {}
    for key in ("MOTA", "IDF1", "HOTA", "IDSW"):
        if key in b or key in a:
            lines.append(f"{key:<5s} before {_fmt(b, key):>8s}  after {_fmt(a, key):>8s}"
                         + (" %" if key in PERCENT_FIELDS else ""))
    return lines


def _plain(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}


def _shipped_row(trainer: Any, start: dict | None, validate: Callable[[nn.Module, int], dict]) -> dict:
    """The ``shipped`` row: the tracker's optional ``shipped_state()`` validated in place of the
    current weights (which are put back), or why there is none."""
    cfg, history = trainer.cfg, trainer.history
    if not cfg.shipped_baseline or not history:
        return {"label": "shipped", "metrics": None,
                "why": "skipped (shipped_baseline: false)" if history else "skipped (no validation ran)"}
    shipped_state = getattr(trainer.tracker, "shipped_state", None)
    if shipped_state is None:
        return {"label": "shipped", "metrics": None, "why": "the tracker ships no weights"}
    state, source = shipped_state()
    if state is None:
        return {"label": "shipped", "metrics": None, "why": source}
    if _same_file(cfg.pretrained, source) and start is not None:
        return {"label": "shipped", "note": "= start", "metrics": _plain(start)}
    model = trainer.model
    # a module's extra state (plain values under "_extra_state") is copied as it is
    current = {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
               for k, v in model.state_dict().items()}
    was_training = model.training
    model.load_state_dict(state)
    model.eval()
    try:
        with torch.no_grad():
            return {"label": "shipped", "metrics": _plain(validate(model, -1))}
    finally:
        model.load_state_dict(current)
        model.train(was_training)


def choose_and_report(trainer: Any, data_root: Path, validate: Callable[[nn.Module, int], dict]) -> dict:
    """After :meth:`DeepMOTTrainer.fit` (rank 0): put the selected weights into ``trainer.model``,
    evaluate the shipped weights on validation and the selected model once on test, and write
    ``report.json``. ``validate(model, step)`` is the run's validation evaluator (``step=-1`` for
    the shipped weights). Returns the report dict (fractions)."""
    cfg, run = trainer.cfg, trainer.run
    history = trainer.history
    start = next((h for h in history if h.get("step") == 0), None)
    after = history[-1] if history and history[-1].get("step") == trainer.step else None

    handed_step, why = trainer.step, "the last step (no validation ran)"
    best_path = run.checkpoint_dir / "best.pt"
    if cfg.hand_back == "best" and trainer.best is not None and best_path.is_file():
        best = load_checkpoint(best_path)
        handed_step = int(best["step"])
        why = (f"best validation {cfg.best_metric} {format_metric(cfg.best_metric, trainer.best)} "
               f"of {len(history)} evaluations")
        if handed_step != trainer.step:
            trainer.model.load_state_dict(best["model"])
        if handed_step == 0 and trainer.step > 0:
            why += "; fine-tuning did not beat the starting tracker, which is handed back"
    elif cfg.hand_back == "last":
        why = "the last step (hand_back: last)"

    rows = [{"label": "start", "note": "step 0", "metrics": _plain(start),
             "why": "not evaluated (eval_before: false)"},
            _shipped_row(trainer, start, validate),
            {"label": "after", "note": f"step {trainer.step}", "metrics": _plain(after),
             "why": "not evaluated (eval_after: false)"}]

    test = None
    if cfg.test is not None:
        was_training = trainer.model.training
        trainer.model.eval()
        with torch.no_grad():
            test = _plain(evaluate_split(trainer.tracker.sequence_factory(cfg.test.mot), data_root, cfg.test,
                                         run.dir / "eval" / "test"))
        trainer.model.train(was_training)
    v = cfg.validation
    report = {"validation": f"{v.split}, {v.frames}, {'/'.join(v.detections)}", "best_metric": cfg.best_metric,
              "rows": rows, "handed_back_step": handed_step, "handed_back": f"step {handed_step}: {why}",
              "test_split": None if cfg.test is None else f"{cfg.test.split}, {cfg.test.frames}, "
                                                          f"{'/'.join(cfg.test.detections)}",
              "test": test}
    atomic_write_text(run.dir / "report.json", json.dumps(report, indent=1, allow_nan=True) + "\n")
    run.wrote(run.dir / "report.json", "final report")
    for line in format_report(report):
        run.logger.info("%s", line)
    return report
