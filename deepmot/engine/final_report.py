"""Validation, model selection and the final report of a DeepMOT fine-tuning run.

The loop validates on ``cfg.validation`` (the synthetic set's ``val/`` split, MOT17's second
halves) and never reads the test split while it trains. Selection treats the starting tracker
(the evaluation at step 0) as a candidate like any later one, so a run hands back
(``siamrpn_deepmot.pth``) the model that validates best by ``best_metric`` — the start itself
when fine-tuning did not beat it. The final report then shows, on the validation split:

* ``start``: the starting tracker (step 0);
* ``shipped``: the weights shipped for the synthetic data
  (``trackers/siamrpn/weights/siamrpn_alex_tiny_synthetic.pth``), when they fit the model;
* ``after``: the model after the last fine-tuning step;

then which model was handed back and, once, that model on the test split (``cfg.test``;
``None`` skips it, e.g. MOT17 whose test split has no GT). It is logged as a table (percent) and
written to ``report.json`` (fractions, as ``evaluate.py``'s JSON).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from deepmot.fileio import atomic_write_text

__all__ = ["evaluate_split", "shipped_weights", "shipped_model", "choose_and_report", "format_report",
           "REPORT_KEYS"]

#: columns of the report table: (metric, shown as percent)
REPORT_KEYS = (("MOTA", True), ("IDF1", True), ("HOTA", True), ("MOTP", True), ("IDSW", False),
               ("FP", False), ("FN", False))


def evaluate_split(model: nn.Module, data_root: Path, vcfg: Any, out_dir: Path) -> dict:
    """Multi-object inference with public detections + official evaluation of ``model`` on the
    sequences ``vcfg`` (a ``ValidationConfig``: split, frames, detections, max_sequences, mot)
    names under ``data_root``; result files go to ``out_dir``. Returns the flat metrics dict of
    :func:`deepmot.engine.inference.evaluate_tracker` (fractions and counts)."""
    from deepmot.config import load_config
    from deepmot.datasets import discover_sequences
    from deepmot.engine.inference import evaluate_tracker
    from trackers.multi_config import MOTConfig

    seqs = discover_sequences(data_root, vcfg.split, detections=vcfg.detections or None)
    if vcfg.max_sequences is not None:
        seqs = seqs[:vcfg.max_sequences]
    mot = load_config(MOTConfig, None, vcfg.mot)
    frames = None if vcfg.frames == "full" else vcfg.frames
    return evaluate_tracker(model, seqs, mot, out_dir, frame_range=frames)


def shipped_weights() -> Path:
    """Path of the SiamRPN weights shipped for the synthetic data (may be absent in a checkout)."""
    from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS

    return Path(SYNTHETIC_WEIGHTS)


def shipped_model(model_name: str, overrides: list[str]) -> tuple[nn.Module | None, str]:
    """The shipped weights in a fresh ``model_name`` SiamRPN, or ``(None, why not)`` when the file
    is absent or does not fit that model config exactly."""
    from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint
    from trackers.siamrpn.checkpoint import CheckpointMismatchError

    path = shipped_weights()
    if not path.is_file():
        return None, f"no shipped weights at {path}"
    model = build_siamrpn(model_name, overrides)
    try:
        load_pysot_checkpoint(model, path)
    except CheckpointMismatchError:
        return None, f"the shipped weights {path.name} do not fit model {model_name!r}"
    return model, str(path)


def _is_shipped(pretrained: str | None) -> bool:
    return bool(pretrained) and Path(pretrained).resolve() == shipped_weights().resolve()


def _fmt(metrics: dict | None, key: str, percent: bool) -> str:
    v = None if metrics is None else metrics.get(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.2f}" if percent else f"{int(v)}"


def format_report(report: dict) -> list[str]:
    """The report as text lines: a table (percent for MOTA/IDF1/HOTA/MOTP, counts otherwise) with
    the validation rows, the hand-back decision and the test row."""
    head = f"{'':30s}" + "".join(f"{k:>8s}" for k, _ in REPORT_KEYS)
    lines = [f"final report — validation ({report['validation']}):", head]
    for row in report["rows"]:
        label = f"  {row['label']}"
        if row.get("note"):
            label += f" ({row['note']})"
        cells = "".join(f"{_fmt(row.get('metrics'), k, p):>8s}" for k, p in REPORT_KEYS)
        lines.append(f"{label:30.30s}{cells}" if row.get("metrics") else f"{label}: {row.get('why', '-')}")
    lines.append(f"handed back: {report['handed_back']}")
    if report.get("test") is not None:
        lines.append(f"test ({report['test_split']}), measured once, handed-back model:")
        cells = "".join(f"{_fmt(report['test'], k, p):>8s}" for k, p in REPORT_KEYS)
        lines.append(f"{'  test':30s}{cells}")
    return lines


def _plain(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}


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
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        handed_step = int(best["step"])
        why = f"best validation {cfg.best_metric} {100 * float(trainer.best):.2f} of {len(history)} evaluations"
        if handed_step != trainer.step:
            trainer.model.load_state_dict(best["model"])
        if handed_step == 0 and trainer.step > 0:
            why += "; fine-tuning did not beat the starting tracker, which is handed back"
    elif cfg.hand_back == "last":
        why = "the last step (hand_back: last)"

    rows = [{"label": "start", "note": "step 0", "metrics": _plain(start),
             "why": "not evaluated (eval_before: false)"}]
    if not cfg.shipped_baseline or not history:
        why = "skipped (shipped_baseline: false)" if history else "skipped (no validation ran)"
        rows.append({"label": "shipped", "metrics": None, "why": why})
    elif _is_shipped(cfg.pretrained) and start is not None:
        rows.append({"label": "shipped", "note": "= start", "metrics": _plain(start)})
    else:
        model, source = shipped_model(cfg.model, list(cfg.model_overrides))
        if model is None:
            rows.append({"label": "shipped", "metrics": None, "why": source})
        else:
            model.to(trainer.dist.device).eval()
            with torch.no_grad():
                rows.append({"label": "shipped", "metrics": _plain(validate(model, -1))})
    rows.append({"label": "after", "note": f"step {trainer.step}", "metrics": _plain(after),
                 "why": "not evaluated (eval_after: false)"})

    test = None
    if cfg.test is not None:
        was_training = trainer.model.training
        trainer.model.eval()
        with torch.no_grad():
            test = _plain(evaluate_split(trainer.model, data_root, cfg.test, run.dir / "eval" / "test"))
        trainer.model.train(was_training)
    v = cfg.validation
    report = {"validation": f"{v.split}, {v.frames}, {'/'.join(v.detections)}", "best_metric": cfg.best_metric,
              "rows": rows, "handed_back_step": handed_step, "handed_back": f"step {handed_step}: {why}",
              "test_split": None if cfg.test is None else f"{cfg.test.split}, {cfg.test.frames}, "
                                                          f"{'/'.join(cfg.test.detections)}",
              "test": test}
    atomic_write_text(run.dir / "report.json", json.dumps(report, indent=1, allow_nan=True) + "\n")
    for line in format_report(report):
        run.logger.info("%s", line)
    return report
