"""Load PySOT / DaSiamRPN weights into a :class:`~trackers.siamrpn.model.SiamRPN`, strictly,
with a readable report (spec ``pysot.md`` §5).

Accepted: a path or an in-memory state dict; a bare state dict, a ``{'state_dict': ...}`` (or
``{'model': ...}``) wrapper; a ``module.`` prefix (DataParallel); BN ``num_batches_tracked``
present or not. Key families are renamed when that makes the file fit the model: PySOT's
layered ``alexnet`` naming <-> ``alexnetlegacy``, and DaSiamRPN's ``featureExtract``/``conv_r1``...
naming -> PySOT. Any missing, unexpected or mis-shaped key raises
:class:`CheckpointMismatchError` (strict mode) whose message lists them all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from deepmot.runtime.checkpoint import extract_state_dict, torch_load
from deepmot.errors import DataFormatError, MissingDataError

__all__ = ["CheckpointMismatchError", "LoadReport", "load_pysot_checkpoint", "read_state_dict",
           "RENAMES"]

_OPTIONAL_SUFFIX = "num_batches_tracked"


class CheckpointMismatchError(DataFormatError):
    """The checkpoint does not fit the model; ``.report`` is the :class:`LoadReport`."""

    def __init__(self, report: "LoadReport"):
        self.report = report
        super().__init__(f"checkpoint does not fit the model:\n{report}", path=report.source)


@dataclass
class LoadReport:
    """What :func:`load_pysot_checkpoint` did: keys loaded, renaming applied, and every key the
    file and the model disagree on (``mismatched`` holds ``(key, file shape, model shape)``)."""

    source: str | None = None
    renaming: str = "none"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    filled_num_batches_tracked: int = 0

    @property
    def ok(self) -> bool:
        """True when every model key was found with the right shape and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"source: {self.source or '<state dict>'}", f"renaming: {self.renaming}",
                 f"loaded: {len(self.loaded)} keys"]

        def block(title: str, items: list[str], limit: int = 20) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {it}" for it in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        block("missing in checkpoint", self.missing)
        block("unexpected in checkpoint", self.unexpected)
        block("shape mismatch (key: checkpoint vs model)",
              [f"{k}: {list(a)} vs {list(b)}" for k, a, b in self.mismatched])
        return "\n".join(lines)


# ----------------------------------------------------------------------------- renamings

_ALEX_LEGACY_TO_LAYER = {0: (1, 0), 1: (1, 1), 4: (2, 0), 5: (2, 1), 8: (3, 0), 9: (3, 1),
                         11: (4, 0), 12: (4, 1), 14: (5, 0), 15: (5, 1)}
_ALEX_LAYER_TO_LEGACY = {v: k for k, v in _ALEX_LEGACY_TO_LAYER.items()}

_DASIAM_PREFIXES = {"featureExtract.": "backbone.features.",
                    "conv_cls1.": "rpn_head.template_cls_conv.",
                    "conv_r1.": "rpn_head.template_loc_conv.",
                    "conv_cls2.": "rpn_head.search_cls_conv.",
                    "conv_r2.": "rpn_head.search_loc_conv.",
                    "regress_adjust.": "rpn_head.loc_adjust."}


def _alex_layered_to_legacy(key: str) -> str:
    m = re.match(r"^backbone\.layer(\d)\.(\d+)\.(.*)$", key)
    if m and (int(m[1]), int(m[2])) in _ALEX_LAYER_TO_LEGACY:
        return f"backbone.features.{_ALEX_LAYER_TO_LEGACY[int(m[1]), int(m[2])]}.{m[3]}"
    return key


def _alex_legacy_to_layered(key: str) -> str:
    m = re.match(r"^backbone\.features\.(\d+)\.(.*)$", key)
    if m and int(m[1]) in _ALEX_LEGACY_TO_LAYER:
        layer, idx = _ALEX_LEGACY_TO_LAYER[int(m[1])]
        return f"backbone.layer{layer}.{idx}.{m[2]}"
    return key


def _dasiamrpn_to_pysot(key: str) -> str:
    for old, new in _DASIAM_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _dasiamrpn_to_pysot_layered(key: str) -> str:
    return _alex_legacy_to_layered(_dasiamrpn_to_pysot(key))


#: candidate key renamings, tried when the keys do not fit as they are
RENAMES: dict[str, Callable[[str], str]] = {
    "alexnet (layered) -> alexnetlegacy": _alex_layered_to_legacy,
    "alexnetlegacy -> alexnet (layered)": _alex_legacy_to_layered,
    "DaSiamRPN -> PySOT": _dasiamrpn_to_pysot,
    "DaSiamRPN -> PySOT alexnet (layered)": _dasiamrpn_to_pysot_layered,
}


# ----------------------------------------------------------------------------- loading

def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> tuple[dict[str, Tensor], str | None]:
    """The flat ``{key: tensor}`` of a checkpoint (file or dict), unwrapped and without
    ``module.`` prefixes; returns ``(state_dict, source path or None)``."""
    source = None
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        source = str(obj)
        path = Path(obj)
        if not path.is_file():
            raise MissingDataError("checkpoint file not found", path)
        obj = torch_load(path, "cpu", "not a readable torch checkpoint")
    state = extract_state_dict(obj, source)
    return state, source


def _compare(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], report: LoadReport) -> None:
    report.missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    report.unexpected = [k for k in state if k not in expected]
    report.mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                         if k in state and state[k].shape != v.shape]


def load_pysot_checkpoint(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping,
                          strict: bool = True) -> LoadReport:
    """Load PySOT/DaSiamRPN weights into ``model`` (CPU tensors, copied into the model's
    parameters). ``strict`` (default): raise :class:`CheckpointMismatchError` unless every key
    fits; otherwise load the keys that fit and return the report of the rest."""
    state, source = read_state_dict(path_or_state_dict)
    expected = model.state_dict()
    best, best_score = LoadReport(source=source), None
    candidates = {"none": lambda k: k, **RENAMES}
    for name, fn in candidates.items():
        renamed = {fn(k): v for k, v in state.items()}
        if len(renamed) != len(state):
            continue  # the renaming merged keys: not this family
        report = LoadReport(source=source, renaming=name)
        _compare(renamed, expected, report)
        score = (len(report.missing) + len(report.unexpected) + len(report.mismatched))
        if best_score is None or score < best_score:
            best, best_score, best_state = report, score, renamed
        if score == 0:
            break
    report, state = best, best_state
    if strict and not report.ok:
        raise CheckpointMismatchError(report)
    bad = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    to_load = {k: v for k, v in state.items() if k not in bad}
    for k, v in expected.items():  # optional BN counters and (non-strict) missing keys
        if k not in to_load:
            to_load[k] = v
            if k.endswith(_OPTIONAL_SUFFIX):
                report.filled_num_batches_tracked += 1
    model.load_state_dict(to_load, strict=True)
    report.loaded = [k for k in state if k not in bad]
    return report
