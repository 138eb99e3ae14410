"""The Deep Hungarian Network: a differentiable stand-in for the gated Hungarian algorithm.

A distance matrix ``D`` (rows = tracks, columns = GT objects, small = close) is read row by
row by a 2-layer bidirectional GRU; its per-entry outputs are re-ordered column by column and
read by a second 2-layer bidirectional GRU; a 3-layer head maps each entry to a logit and a
sigmoid gives the soft assignment ``A`` of the same shape. Attribute names follow DeepMOT's
released ``DHN.pth`` (``lstm_row``, ``lstm_col``, ``hidden2tag_1..3``) so that file loads.

Gated (forbidden) pairs enter as ``d + 1.0`` (:func:`deepmot.boxes.gate_distance`); NaN/inf
inputs are rejected rather than silently propagated.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from deepmot.config import PositiveInt, Range, config_from_dict
from deepmot.runtime.checkpoint import extract_state_dict, torch_load

__all__ = ["DHNConfig", "DeepHungarianNet", "extract_state_dict", "WEIGHTS_DIR", "DEFAULT_WEIGHTS"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: File name of the shipped weights inside :data:`WEIGHTS_DIR`.
DEFAULT_WEIGHTS = "dhn.pt"


@dataclasses.dataclass
class DHNConfig:
    """Architecture of a :class:`DeepHungarianNet` (recorded in every checkpoint).

    ``hidden_size``: GRU hidden size per direction (256 = DeepMOT's ``DHN.pth``).
    ``num_layers``: stacked layers in each GRU. ``dropout``: between stacked GRU layers.
    ``head_dims``: widths of the two hidden head layers (DeepMOT: 256, 64).
    ``head_activation``: ``"none"`` (reference: three affine maps) or ``"relu"``.
    """

    hidden_size: PositiveInt = 256
    num_layers: PositiveInt = 2
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    head_dims: tuple[PositiveInt, PositiveInt] = (256, 64)
    head_activation: Literal["none", "relu"] = "none"

    def __post_init__(self) -> None:
        if len(self.head_dims) != 2:
            raise ValueError(f"head_dims must hold two widths, got {list(self.head_dims)}")


class DeepHungarianNet(nn.Module):
    """Sequential row-then-column bidirectional GRU: ``(B, N, M)`` distances -> ``(B, N, M)`` in (0, 1).

    Build with keyword arguments of :class:`DHNConfig` (defaults = DeepMOT's released model).
    Device-agnostic; any ``N, M >= 1``; ``N = 0`` or ``M = 0`` returns an empty output.
    """

    def __init__(self, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.0,
                 head_dims: Sequence[int] = (256, 64), head_activation: str = "none"):
        super().__init__()
        if head_activation not in ("none", "relu"):
            raise ValueError(f"head_activation must be 'none' or 'relu', got {head_activation!r}")
        if len(head_dims) != 2:
            raise ValueError(f"head_dims must hold 2 widths, got {head_dims!r}")
        self.config = DHNConfig(hidden_size, num_layers, float(dropout),
                                (int(head_dims[0]), int(head_dims[1])), head_activation)
        h = hidden_size
        self.lstm_row = nn.GRU(1, h, num_layers, batch_first=True, bidirectional=True, dropout=dropout)
        self.lstm_col = nn.GRU(2 * h, h, num_layers, batch_first=True, bidirectional=True,
                               dropout=dropout)
        self.hidden2tag_1 = nn.Linear(2 * h, head_dims[0])
        self.hidden2tag_2 = nn.Linear(head_dims[0], head_dims[1])
        self.hidden2tag_3 = nn.Linear(head_dims[1], 1)
        self._act = nn.ReLU() if head_activation == "relu" else nn.Identity()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, cfg: DHNConfig | Mapping[str, Any]) -> "DeepHungarianNet":
        """Build from a :class:`DHNConfig` or its dict form (as stored in checkpoints)."""
        if isinstance(cfg, DHNConfig):
            return cls(**dataclasses.asdict(cfg))
        if not isinstance(cfg, Mapping):
            raise ValueError(f"DHN model_config must be a mapping, got {type(cfg).__name__}")
        return cls(**dataclasses.asdict(config_from_dict(DHNConfig, dict(cfg))))  # checked types, ranges

    def reset_parameters_deepmot(self) -> None:
        """DeepMOT's training init: orthogonal GRU weights, reset-gate biases set to -1."""
        h = self.config.hidden_size
        for gru in (self.lstm_row, self.lstm_col):
            for name, p in gru.named_parameters():
                if name.startswith("weight"):
                    nn.init.orthogonal_(p)
                else:
                    with torch.no_grad():
                        p[:h].fill_(-1.0)

    def freeze(self) -> "DeepHungarianNet":
        """Frozen use inside a loss: no parameter gradients, eval mode; input gradients still flow."""
        self.requires_grad_(False)
        self.eval()
        return self

    @classmethod
    def pretrained(cls, path: str | Path | None = None, map_location: str | torch.device = "cpu",
                   freeze: bool = True) -> "DeepHungarianNet":
        """Load the shipped weights (``deepmot/dhn/weights/dhn.pt``) or ``path``.

        ``path`` may be one of our checkpoints (``{"model": ..., "config": ...}``) or a DeepMOT
        ``DHN.pth`` (bare state dict, ``{'state_dict': ...}`` wrapper, ``module.`` prefix),
        in which case the reference architecture (hidden 256) is assumed. Frozen by default.
        """
        path = Path(path) if path is not None else WEIGHTS_DIR / DEFAULT_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"DHN weights not found: {path}")
        obj = torch_load(path, map_location, "not loadable as DHN weights")
        cfg = obj.get("model_config") if isinstance(obj, Mapping) else None
        model = cls.from_config(cfg) if cfg is not None else cls()
        try:
            model.load_state_dict(extract_state_dict(obj))
        except RuntimeError as e:
            detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])
            raise ValueError(f"{path}: state dict does not fit DeepHungarianNet({model.config}): "
                             f"{detail[:300]}") from None
        return model.freeze() if freeze else model

    # ------------------------------------------------------------------ forward
    def logits(self, d: Tensor) -> Tensor:
        """``(B, N, M)`` (or ``(N, M)``) distances -> logits of the same shape (no sigmoid)."""
        squeeze = d.dim() == 2
        if squeeze:
            d = d.unsqueeze(0)
        if d.dim() != 3:
            raise ValueError(f"DHN input must be (N, M) or (B, N, M), got shape {tuple(d.shape)}")
        if not torch.is_floating_point(d):
            raise ValueError(f"DHN input must be a float tensor, got {d.dtype}")
        b, n, m = d.shape
        if b == 0 or n == 0 or m == 0:
            out = d.new_zeros(d.shape)
            return out[0] if squeeze else out
        if not torch.isfinite(d).all():
            raise ValueError("DHN input contains NaN or inf; gate forbidden pairs with "
                             "deepmot.boxes.gate_distance (d + 1.0) instead of inf/NaN")
        d = d.to(self.hidden2tag_1.weight.dtype)
        h2 = 2 * self.config.hidden_size
        x, _ = self.lstm_row(d.reshape(b, n * m, 1))                        # row-major sequence
        x = x.reshape(b, n, m, h2).transpose(1, 2).reshape(b, m * n, h2)     # column-major
        x, _ = self.lstm_col(x)
        x = x.reshape(b, m, n, h2).transpose(1, 2)                           # (B, N, M, 2H)
        x = self._act(self.hidden2tag_1(x))
        x = self._act(self.hidden2tag_2(x))
        out = self.hidden2tag_3(x).squeeze(-1)
        return out[0] if squeeze else out

    def forward(self, d: Tensor, return_logits: bool = False) -> Tensor:
        """``(B, N, M)`` (or ``(N, M)``) distances -> soft assignment in (0, 1), same shape
        (the logits before the sigmoid when ``return_logits``)."""
        z = self.logits(d)
        return z if return_logits else torch.sigmoid(z)

    def forward_many(self, matrices: Sequence[Tensor], max_batch: int = 256) -> list[Tensor]:
        """Run a list of ``(N_i, M_i)`` matrices of mixed shapes; returns outputs in input order.

        Matrices are grouped by shape (bucketing, no padding) and each group runs as one batch
        of at most ``max_batch`` matrices, so results equal per-matrix calls.
        """
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, mat in enumerate(matrices):
            if mat.dim() != 2:
                raise ValueError(f"matrix {i} must be 2-D (N, M), got shape {tuple(mat.shape)}")
            groups[tuple(mat.shape)].append(i)
        out: list[Tensor | None] = [None] * len(matrices)
        for idx in groups.values():
            for s in range(0, len(idx), max_batch):
                chunk = idx[s:s + max_batch]
                res = self(torch.stack([matrices[i] for i in chunk]))
                for k, i in enumerate(chunk):
                    out[i] = res[k]
        return out  # type: ignore[return-value]
