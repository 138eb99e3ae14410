"""How well a soft assignment reproduces the gated Hungarian matching, per size bucket.

Discretisation (stated threshold ``th``, default 0.5):

* row-wise: each row keeps its largest score if it exceeds ``th`` (one object per track);
* column-wise: each column keeps its largest score if it exceeds ``th``;
* mutual: an entry is kept if it is the largest of both its row and its column and exceeds
  ``th`` (one-to-one by construction).

Per matrix, with the exact target ``y`` (gated Hungarian) and ``n1`` ones among ``n`` entries,
``w0 = n1 / n``, ``w1 = 1 - w0``: weighted accuracy ``WA = (w1 TP + w0 TN) / (w1 n1 + w0 n0)``
(averaged over matrices). Precision, recall and F1 pool TP/FP/FN over all matrices. The
exact-assignment rate is the share of matrices whose discretised output equals the target.

A trivial baseline is always reported beside the DHN: each track takes its nearest allowed
object (row-wise argmin over non-forbidden pairs), which is what the DHN must beat.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torch import Tensor

from deepmot.dhn.data import SIZE_BUCKETS, DHNSample, size_bucket

__all__ = ["discretise", "row_argmin_baseline", "matrix_counts", "evaluate_predictions",
           "evaluate_model", "format_table", "BUCKET_NAMES"]

BUCKET_NAMES = tuple(size_bucket(hi, hi) for _, hi in SIZE_BUCKETS)


def discretise(scores: Tensor, threshold: float = 0.5, mode: str = "row") -> Tensor:
    """``(N, M)`` scores -> 0/1 float ``(N, M)``: per row (``"row"``) or column (``"col"``), the
    maximum entry if it exceeds ``threshold``; ``"mutual"``: both at once."""
    if scores.numel() == 0:
        return torch.zeros_like(scores)
    if mode == "mutual":
        return discretise(scores, threshold, "row") * discretise(scores, threshold, "col")
    dim = {"row": 1, "col": 0}[mode]
    val, idx = scores.max(dim=dim, keepdim=True)
    out = torch.zeros_like(scores).scatter_(dim, idx, 1.0)
    return out * (val > threshold).to(scores.dtype)


def row_argmin_baseline(distance: Tensor, forbidden: Tensor) -> Tensor:
    """``(N, M)`` distances -> 0/1 ``(N, M)``: each row's nearest allowed column (none if all forbidden)."""
    if distance.numel() == 0:
        return torch.zeros_like(distance)
    masked = distance.masked_fill(forbidden, float("inf"))
    val, idx = masked.min(dim=1, keepdim=True)
    out = torch.zeros_like(distance).scatter_(1, idx, 1.0)
    return out * torch.isfinite(val).to(distance.dtype)


def matrix_counts(pred: Tensor, target: Tensor) -> dict[str, float]:
    """TP, FP, FN, TN, weighted accuracy and exactness of one 0/1 ``pred`` vs 0/1 ``target``."""
    p, y = pred.bool(), target.bool()
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    tn = int((~p & ~y).sum())
    n1, n = tp + fn, y.numel()
    n0 = n - n1
    w0 = n1 / n if n else 0.0
    w1 = 1.0 - w0
    if n1 == 0:
        w0, w1 = 1.0, 0.0
    elif n1 == n:
        w0, w1 = 0.0, 1.0
    denom = w1 * n1 + w0 * n0
    wa = (w1 * tp + w0 * tn) / denom if denom > 0 else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "wa": wa, "exact": float(fp == 0 and fn == 0)}


def _summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    k = max(len(rows), 1)
    return {"count": len(rows), "wa": sum(r["wa"] for r in rows) / k, "precision": prec,
            "recall": rec, "f1": f1, "exact": sum(r["exact"] for r in rows) / k}


def evaluate_predictions(samples: Sequence[DHNSample], scores: Sequence[Tensor] | None,
                         threshold: float = 0.5) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of DHN ``scores`` (one ``(N, M)`` tensor per sample) and of the baseline.

    Returns ``{method: {bucket: {count, wa, precision, recall, f1, exact}}}`` with methods
    ``"dhn_row"``, ``"dhn_col"``, ``"dhn_mutual"`` (absent when ``scores`` is None) and ``"baseline"``, and
    buckets :data:`BUCKET_NAMES` plus ``"all"``.
    """
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, s in enumerate(samples):
        bucket = size_bucket(*s.target.shape)
        preds = {"baseline": row_argmin_baseline(s.distance, s.forbidden)}
        if scores is not None:
            sc = scores[i].detach().float().cpu()
            preds["dhn_row"] = discretise(sc, threshold, "row")
            preds["dhn_col"] = discretise(sc, threshold, "col")
            preds["dhn_mutual"] = discretise(sc, threshold, "mutual")
        for name, pred in preds.items():
            c = matrix_counts(pred, s.target)
            per[name][bucket].append(c)
            per[name]["all"].append(c)
    return {name: {b: _summarise(rows) for b, rows in buckets.items()} for name, buckets in per.items()}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, samples: Sequence[DHNSample], threshold: float = 0.5,
                   max_batch: int = 256) -> dict[str, dict[str, dict[str, float]]]:
    """Run ``model`` (a :class:`~deepmot.dhn.model.DeepHungarianNet`) on ``samples`` (bucketed
    by shape) and return :func:`evaluate_predictions` of its outputs."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        scores = model.forward_many([s.gated.to(device) for s in samples], max_batch=max_batch)
    finally:
        model.train(was_training)
    return evaluate_predictions(samples, scores, threshold)


def format_table(results: dict[str, dict[str, dict[str, float]]], threshold: float = 0.5,
                 methods: Iterable[str] = ("dhn_row", "dhn_col", "dhn_mutual", "baseline")) -> str:
    """A markdown table of :func:`evaluate_predictions` results (one row per method and bucket),
    ratios in percent with 3 decimals."""
    lines = [f"| method (th={threshold}) | bucket max(N,M) | matrices | WA % | precision % | recall % | F1 % "
             "| exact % |",
             "|---|---|---|---|---|---|---|---|"]
    for name in methods:
        if name not in results:
            continue
        for bucket in (*BUCKET_NAMES, "all"):
            r = results[name].get(bucket)
            if r is None:
                continue
            lines.append(f"| {name} | {bucket} | {r['count']} | " + " | ".join(
                f"{100 * r[k]:.3f}" for k in ("wa", "precision", "recall", "f1", "exact")) + " |")
    return "\n".join(lines)
