"""PySOT's ``SiamRPNTracker`` inference procedure, batched over N targets (spec §3.5-3.7).

:class:`BatchedSiamRPNTracker` holds N targets of one video (ids, centres, sizes, padding colours,
template crops and stacked template features). One :meth:`~BatchedSiamRPNTracker.track` call
crops every target's search window, runs **one** network pass for all of them (per-target
templates: the depthwise correlation is grouped per sample by the model) and post-processes all
targets at once (scale/ratio penalties, cosine window, size smoothing with ``lr``, clipping).
:class:`SiamRPNTracker` is the PySOT-style single-target ``init``/``track`` API on top of it, so
one target through the batched path is the single-target path.

Numerics follow PySOT: scores and decoded boxes in float32 (as the network's outputs), penalties,
window and state in float64, ``round``/``floor`` exactly as PySOT (see :mod:`.crop`). The
``flavour="dasiamrpn"`` option reproduces DaSiamRPN/DeepMOT v1's differences (§9.4): shifted
anchor grid, ``round`` crop origin and the ``x + w/2`` initial centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trackers.siamrpn.anchors import Flavour, anchor_grid, cosine_window, score_size
from trackers.siamrpn.config import SiamRPNConfig
from trackers.siamrpn.crop import channel_average, crop_batch

__all__ = ["TrackParams", "TargetState", "Proposals", "TrackResult", "BatchedSiamRPNTracker",
           "SiamRPNTracker", "propose", "update_state", "check_finite", "template_sizes",
           "search_scales", "take_features", "cat_features"]

Features = Tensor | list[Tensor]


# --------------------------------------------------------------------------- parameters
_PYSOT = SiamRPNConfig()  # one source of the default tracking/anchor values


@dataclass(frozen=True)
class TrackParams:
    """Tracking hyper-parameters (PySOT ``cfg.TRACK`` + ``cfg.ANCHOR``); the defaults are those of
    :class:`~trackers.siamrpn.config.SiamRPNConfig` (PySOT's)."""

    exemplar_size: int = _PYSOT.exemplar_size
    instance_size: int = _PYSOT.instance_size
    base_size: int = _PYSOT.base_size
    context_amount: float = _PYSOT.context_amount
    penalty_k: float = _PYSOT.penalty_k
    window_influence: float = _PYSOT.window_influence
    lr: float = _PYSOT.lr
    stride: int = _PYSOT.anchor_stride
    ratios: tuple[float, ...] = tuple(_PYSOT.anchor_ratios)
    scales: tuple[float, ...] = tuple(_PYSOT.anchor_scales)
    flavour: Flavour = _PYSOT.flavour
    min_size: float = 10.0  # clipping floor for width/height (pixels), PySOT's _bbox_clip

    @property
    def score_size(self) -> int:
        """Side S of the score map for ``instance_size``."""
        return score_size(self.instance_size, self.exemplar_size, self.stride, self.base_size)

    @property
    def anchor_num(self) -> int:
        """Anchors per cell, A."""
        return len(self.ratios) * len(self.scales)

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "TrackParams":
        """Parameters of a :class:`~trackers.siamrpn.config.SiamRPNConfig` (``None``: PySOT defaults),
        with keyword overrides (e.g. ``flavour="dasiamrpn"``)."""
        values: dict[str, Any] = {}
        if cfg is not None:
            values = dict(exemplar_size=cfg.exemplar_size, instance_size=cfg.instance_size,
                          base_size=cfg.base_size, context_amount=cfg.context_amount,
                          penalty_k=cfg.penalty_k, window_influence=cfg.window_influence, lr=cfg.lr,
                          stride=cfg.anchor_stride, ratios=tuple(float(r) for r in cfg.anchor_ratios),
                          scales=tuple(float(r) for r in cfg.anchor_scales), flavour=getattr(cfg, "flavour", "pysot"))
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------- state
@dataclass
class TargetState:
    """The N targets' state; row i of every field belongs to ``ids[i]``.

    ``center`` ``(N, 2)`` float64 ``cx, cy`` and ``size`` ``(N, 2)`` float64 ``w, h`` (image pixels,
    PySOT convention ``cx = x + (w - 1) / 2``); ``channel_average`` ``(N, 3)`` float64 BGR padding
    colour fixed at init; ``templates`` ``(N, 3, Z, Z)`` float32 template crops (kept so training
    can re-encode them with gradient); ``zf`` template features, batch N (tensor or list per level).
    """

    ids: list[int] = field(default_factory=list)
    center: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    size: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    channel_average: Tensor = field(default_factory=lambda: torch.zeros(0, 3, dtype=torch.float64))
    templates: Tensor | None = None
    zf: Features | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def boxes_xywh(self) -> Tensor:
        """Current boxes ``(N, 4)`` float64 ``x, y, w, h`` as PySOT reports them (``cx - w/2``)."""
        return torch.cat([self.center - self.size / 2, self.size], dim=1)

    def take(self, rows: Sequence[int] | Tensor) -> "TargetState":
        """A new state with the given rows (in that order); tensors are indexed, not shared views."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        return TargetState(
            ids=[self.ids[int(i)] for i in idx],
            center=self.center[idx], size=self.size[idx], channel_average=self.channel_average[idx],
            templates=None if self.templates is None else self.templates[idx.to(self.templates.device)],
            zf=None if self.zf is None else take_features(self.zf, idx))

    @staticmethod
    def concat(a: "TargetState", b: "TargetState") -> "TargetState":
        """Rows of ``a`` followed by rows of ``b``."""
        if len(a) == 0:
            return b
        if len(b) == 0:
            return a
        return TargetState(
            ids=a.ids + b.ids, center=torch.cat([a.center, b.center]), size=torch.cat([a.size, b.size]),
            channel_average=torch.cat([a.channel_average, b.channel_average]),
            templates=torch.cat([a.templates, b.templates]) if a.templates is not None else None,
            zf=cat_features(a.zf, b.zf))


def take_features(zf: Features, idx: Tensor) -> Features:
    """Rows ``idx`` of template features (a tensor or a list of per-level tensors)."""
    if isinstance(zf, Tensor):
        return zf[idx.to(zf.device)]
    return [f[idx.to(f.device)] for f in zf]


def cat_features(a: Features, b: Features) -> Features:
    """Concatenate two feature batches along the batch dimension."""
    if isinstance(a, Tensor):
        return torch.cat([a, b])
    return [torch.cat([x, y]) for x, y in zip(a, b)]


# --------------------------------------------------------------------------- geometry
def _context_side(size: Tensor, context_amount: float) -> Tensor:
    """``sqrt(w_z * h_z)`` with ``w_z = w + ca * (w + h)``: ``(N,)`` float64 image pixels."""
    ctx = context_amount * size.sum(dim=1)
    return torch.sqrt((size[:, 0] + ctx) * (size[:, 1] + ctx))


def template_sizes(size: Tensor, params: TrackParams) -> Tensor:
    """Template window sides ``round(s_z)`` (half to even, as PySOT's ``round``): ``(N,)`` int64."""
    return torch.round(_context_side(size, params.context_amount)).long()


def search_scales(size: Tensor, params: TrackParams) -> tuple[Tensor, Tensor]:
    """``scale_z = exemplar / s_z`` ``(N,)`` float64 and the integer search window ``round(s_x)``
    ``(N,)`` int64, ``s_x = s_z * instance / exemplar`` (image pixels)."""
    s_z = _context_side(size, params.context_amount)
    scale_z = params.exemplar_size / s_z
    s_x = s_z * (params.instance_size / params.exemplar_size)
    return scale_z, torch.round(s_x).long()


# --------------------------------------------------------------------------- post-processing
@dataclass
class Proposals:
    """The per-anchor quantities of one track step for N targets (K = A*S*S anchors).

    ``score`` ``(N, K)`` float32 foreground probability; ``pred`` ``(N, 4, K)`` decoded ``cx, cy, w, h``
    in search-crop pixels relative to the crop centre (dtype of ``loc``; differentiable w.r.t. it);
    ``penalty`` ``(N, K)`` float64 scale/ratio penalty; ``best`` ``(N,)`` selected anchor (argmax of the
    windowed penalised score, first on ties); ``scale_z`` ``(N,)`` float64 crop-pixels per image pixel.
    """

    score: Tensor
    pred: Tensor
    penalty: Tensor
    best: Tensor
    scale_z: Tensor

    def best_score(self) -> Tensor:
        """Unpenalised foreground probability at the selected anchor, ``(N,)`` float32."""
        return self.score.gather(1, self.best[:, None]).squeeze(1)

    def best_pred(self) -> Tensor:
        """Decoded ``cx, cy, w, h`` (crop pixels) at the selected anchor, ``(N, 4)``, with grad."""
        n = self.pred.shape[0]
        return self.pred.gather(2, self.best.view(n, 1, 1).expand(n, 4, 1)).squeeze(2)

    def lr(self, params: TrackParams) -> Tensor:
        """Size-smoothing rate ``penalty * score * LR`` at the selected anchor, ``(N,)`` float64."""
        pen = self.penalty.gather(1, self.best[:, None]).squeeze(1)
        return pen * self.best_score().double() * params.lr


def propose(cls: Tensor, loc: Tensor, size: Tensor, anchors: Tensor, window: Tensor,
            params: TrackParams) -> Proposals:
    """Score, decode, penalise and select for N targets at once (PySOT ``track`` steps 3-5).

    ``cls`` ``(N, 2A, S, S)``, ``loc`` ``(N, 4A, S, S)`` network outputs; ``size`` ``(N, 2)`` float64
    current target sizes (image pixels); ``anchors`` ``(K, 4)`` float32 ``cx, cy, w, h``; ``window``
    ``(K,)`` float64. ``pred`` keeps the autograd graph of ``loc``; everything used for the selection
    (score, penalty, window) is computed from detached values.
    """
    n = cls.shape[0]
    k = anchors.shape[0]
    dev = loc.device
    score = torch.softmax(cls.detach().reshape(n, 2, k), dim=1)[:, 1]
    delta = loc.reshape(n, 4, k)
    anc = anchors.to(device=dev, dtype=loc.dtype)
    pred = torch.stack([delta[:, 0] * anc[:, 2] + anc[:, 0],
                        delta[:, 1] * anc[:, 3] + anc[:, 1],
                        torch.exp(delta[:, 2]) * anc[:, 2],
                        torch.exp(delta[:, 3]) * anc[:, 3]], dim=1)
    pw, ph = pred[:, 2].detach(), pred[:, 3].detach()
    size = size.to(dev)
    scale_z = params.exemplar_size / _context_side(size, params.context_amount)

    def sz(w: Tensor, h: Tensor) -> Tensor:
        pad = (w + h) * 0.5
        return torch.sqrt((w + pad) * (h + pad))

    def change(r: Tensor) -> Tensor:
        return torch.maximum(r, 1.0 / r)

    # dtypes as PySOT: terms of the prediction in float32, the state's terms in float64
    s_c = change(sz(pw, ph).double() / sz(size[:, 0] * scale_z, size[:, 1] * scale_z)[:, None])
    r_c = change((size[:, 0] / size[:, 1])[:, None] / (pw / ph).double())
    penalty = torch.exp(-(r_c * s_c - 1) * params.penalty_k)
    pscore = penalty * score.double()
    pscore = pscore * (1 - params.window_influence) + window.to(dev) * params.window_influence
    best = torch.argmax(pscore, dim=1)
    return Proposals(score=score, pred=pred, penalty=penalty, best=best, scale_z=scale_z)


def update_state(center: Tensor, size: Tensor, props: Proposals, params: TrackParams,
                 image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """PySOT's state update (steps 6-8): move the centre by the selected box, smooth the size with
    ``lr``, clip. Returns new ``center`` and ``size`` ``(N, 2)`` float64 (detached)."""
    dev = center.device
    bbox = props.best_pred().detach().double().to(dev) / props.scale_z.to(dev)[:, None]
    lr = props.lr(params).to(dev)[:, None]
    new_center = center + bbox[:, :2]
    new_size = size * (1 - lr) + bbox[:, 2:] * lr
    h, w = image_hw
    lim = torch.tensor([float(w), float(h)], dtype=torch.float64, device=dev)
    new_center = torch.minimum(new_center.clamp(min=0.0), lim)
    new_size = torch.minimum(new_size, lim).clamp(min=params.min_size)
    return new_center, new_size


def check_finite(a: Tensor, b: Tensor, ids: Sequence[int], what: str = "network outputs cls/loc") -> None:
    """Raise ``FloatingPointError`` naming the targets (rows of ``a``/``b``) holding NaN/inf; PySOT
    would instead fail later inside the next crop with an unrelated message."""
    bad = ~(torch.isfinite(a).flatten(1).all(1) & torch.isfinite(b).flatten(1).all(1))
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise FloatingPointError(f"non-finite {what} for target id(s) {[ids[r] for r in rows]}; "
                                 "check the weights (uncalibrated BatchNorm, exploding regression?)")


# --------------------------------------------------------------------------- trackers
@dataclass
class TrackResult:
    """Output of one batched track step: ``ids`` (N), ``bbox`` ``(N, 4)`` float64 ``x, y, w, h``
    (PySOT's reported box, ``x = cx - w/2``) and ``best_score`` ``(N,)`` float32."""

    ids: list[int]
    bbox: Tensor
    best_score: Tensor

    def xyxy(self) -> Tensor:
        """Boxes as ``(N, 4)`` float64 ``x1, y1, x2, y2`` (``x2 = x + w``)."""
        return torch.cat([self.bbox[:, :2], self.bbox[:, :2] + self.bbox[:, 2:]], dim=1)


def _check_boxes(boxes: Tensor | np.ndarray | Sequence, n_ids: int | None) -> Tensor:
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4) if not isinstance(boxes, Tensor) \
        else boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
    if not torch.isfinite(b).all() or (b[:, 2:] <= 0).any():
        raise ValueError(f"init boxes must be finite x, y, w, h with w, h > 0, got {b.tolist()}")
    if n_ids is not None and n_ids != b.shape[0]:
        raise ValueError(f"got {b.shape[0]} boxes but {n_ids} ids")
    return b


class BatchedSiamRPNTracker:
    """N SiamRPN single-object trackers on the same video, stepped together.

    ``model`` is a PySOT-compatible ``SiamRPN`` (``template(z) -> zf``, ``track(zf, x) -> (cls, loc)``,
    per-sample batched); it is put in eval mode. ``params`` default to ``TrackParams.from_config(model.cfg)``.
    ``max_batch`` splits the network pass into chunks of at most that many targets (memory bound).
    """

    def __init__(self, model: nn.Module, params: TrackParams | None = None, max_batch: int | None = None):
        self.model = model.eval()
        self.params = params if params is not None else TrackParams.from_config(getattr(model, "cfg", None))
        p = self.params
        self.anchors = torch.from_numpy(anchor_grid(p.score_size, p.stride, p.ratios, p.scales, p.flavour))
        self.window = torch.from_numpy(cosine_window(p.score_size, p.anchor_num))
        self.max_batch = max_batch
        self.state = TargetState()
        self._next_id = 0

    # ----------------------------------------------------------------- bookkeeping
    @property
    def ids(self) -> list[int]:
        """Ids of the live targets, in row order."""
        return list(self.state.ids)

    def __len__(self) -> int:
        return len(self.state)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def init_state(self, img: np.ndarray, boxes_xywh: Tensor | np.ndarray | Sequence,
                   ids: Sequence[int]) -> TargetState:
        """State of new targets from 0-based ``x, y, w, h`` boxes ``(M, 4)`` on BGR uint8 ``img``
        (PySOT ``init``): centre, size, image-mean padding colour, template crops and features."""
        b = _check_boxes(boxes_xywh, len(ids))
        p = self.params
        off = b[:, 2:] / 2 if p.flavour == "dasiamrpn" else (b[:, 2:] - 1) / 2
        center = b[:, :2] + off
        size = b[:, 2:].clone()
        avg = torch.from_numpy(channel_average(img)).reshape(1, 3)
        avg = avg.expand(len(ids), 3).clone()
        z = crop_batch(img, center.numpy(), p.exemplar_size, template_sizes(size, p).numpy(),
                       avg.numpy(), p.flavour).to(self.device)
        with torch.no_grad():
            zf = self.encode_templates(z)
        return TargetState(ids=list(ids), center=center, size=size, channel_average=avg, templates=z, zf=zf)

    def add(self, img: np.ndarray, boxes_xywh: Tensor | np.ndarray | Sequence,
            ids: Sequence[int] | None = None) -> list[int]:
        """Start targets from 0-based ``x, y, w, h`` boxes ``(M, 4)`` (pixels) on ``img``; returns their
        ids (given, or fresh consecutive integers). Ids must be new."""
        b = _check_boxes(boxes_xywh, None if ids is None else len(ids))
        if ids is None:
            ids = list(range(self._next_id, self._next_id + b.shape[0]))
        ids = [int(i) for i in ids]
        clash = set(ids) & set(self.state.ids)
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"target ids must be new and unique; already live or repeated: {sorted(clash) or ids}")
        if not ids:
            return []
        self._next_id = max(self._next_id, max(ids) + 1)
        self.state = TargetState.concat(self.state, self.init_state(img, b, ids))
        return ids

    def remove(self, ids: Sequence[int]) -> None:
        """Drop the targets with these ids (unknown ids raise ``KeyError``)."""
        drop = {int(i) for i in ids}
        unknown = drop - set(self.state.ids)
        if unknown:
            raise KeyError(f"no live target with id(s) {sorted(unknown)}")
        keep = [r for r, i in enumerate(self.state.ids) if i not in drop]
        self.state = self.state.take(keep) if keep else TargetState()

    def reinit(self, img: np.ndarray, ids: Sequence[int], boxes_xywh: Tensor | np.ndarray | Sequence) -> None:
        """Re-initialise existing targets (new template, position, padding colour) from 0-based
        ``x, y, w, h`` boxes on ``img``, keeping their ids and rows (DeepMOT's template refresh)."""
        fresh = self.init_state(img, boxes_xywh, [int(i) for i in ids])
        row = {i: r for r, i in enumerate(self.state.ids)}
        missing = [i for i in fresh.ids if i not in row]
        if missing:
            raise KeyError(f"no live target with id(s) {missing}")
        rows = torch.tensor([row[i] for i in fresh.ids], dtype=torch.long)
        s = self.state

        def put(old: Tensor, new: Tensor) -> Tensor:   # out of place: earlier snapshots stay valid
            out = old.clone()
            out[rows.to(old.device)] = new
            return out

        self.state = TargetState(
            ids=list(s.ids), center=put(s.center, fresh.center), size=put(s.size, fresh.size),
            channel_average=put(s.channel_average, fresh.channel_average),
            templates=put(s.templates, fresh.templates),
            zf=put(s.zf, fresh.zf) if isinstance(s.zf, Tensor) else [put(f, g) for f, g in zip(s.zf, fresh.zf)])

    # ----------------------------------------------------------------- network
    def _chunks(self, n: int) -> list[slice]:
        step = self.max_batch or max(n, 1)
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def encode_templates(self, z: Tensor) -> Features:
        """``model.template`` over a batch of template crops ``(N, 3, Z, Z)`` (chunked by ``max_batch``)."""
        z = z.to(self.device)
        outs = [self.model.template(z[s]) for s in self._chunks(z.shape[0])]
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], Tensor):
            return torch.cat(outs)
        return [torch.cat([o[lvl] for o in outs]) for lvl in range(len(outs[0]))]

    def search_crops(self, img: np.ndarray, state: TargetState | None = None) -> tuple[Tensor, Tensor]:
        """Search crops ``(N, 3, X, X)`` float32 for every target of ``state`` (default: the tracker's)
        and their ``scale_z`` ``(N,)`` float64."""
        s = self.state if state is None else state
        p = self.params
        scale_z, s_x = search_scales(s.size, p)
        x = crop_batch(img, s.center.numpy(), p.instance_size, s_x.numpy(), s.channel_average.numpy(), p.flavour)
        return x, scale_z

    def network(self, zf: Features, x: Tensor) -> tuple[Tensor, Tensor]:
        """``model.track`` over the batch (chunked by ``max_batch``): ``cls (N, 2A, S, S)``, ``loc (N, 4A, S, S)``."""
        x = x.to(self.device)
        chunks = self._chunks(x.shape[0])
        if len(chunks) == 1:
            return self.model.track(zf, x)
        outs = [self.model.track(take_features(zf, torch.arange(s.start, s.stop)), x[s]) for s in chunks]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    # ----------------------------------------------------------------- tracking
    def track(self, img: np.ndarray) -> TrackResult:
        """Track every live target into BGR uint8 ``img`` ``(H, W, 3)``; updates the state (PySOT ``track``)."""
        s = self.state
        if len(s) == 0:
            return TrackResult(ids=[], bbox=torch.zeros(0, 4, dtype=torch.float64),
                               best_score=torch.zeros(0, dtype=torch.float32))
        x, _ = self.search_crops(img)
        with torch.no_grad():
            cls, loc = self.network(s.zf, x)
            check_finite(cls, loc, s.ids)
            props = propose(cls, loc, s.size, self.anchors, self.window, self.params)
        center, size = (t.cpu() for t in update_state(s.center, s.size, props, self.params, img.shape[:2]))
        check_finite(center, size, s.ids, "state update (box regression overflow?)")
        s.center, s.size = center, size
        return TrackResult(ids=list(s.ids), bbox=s.boxes_xywh(), best_score=props.best_score().cpu())


class SiamRPNTracker:
    """PySOT-style single-target tracker: ``init(img, [x, y, w, h])`` then ``track(img)`` returning
    ``{'bbox': [x, y, w, h], 'best_score': float}``. Runs the batched path with one target."""

    def __init__(self, model: nn.Module, params: TrackParams | None = None):
        self.batched = BatchedSiamRPNTracker(model, params)

    @property
    def center_pos(self) -> np.ndarray:
        """Current centre ``(cx, cy)`` float64."""
        return self.batched.state.center[0].numpy()

    @property
    def size(self) -> np.ndarray:
        """Current size ``(w, h)`` float64."""
        return self.batched.state.size[0].numpy()

    def init(self, img: np.ndarray, bbox: Sequence[float]) -> None:
        """Initialise on BGR uint8 ``img`` with a 0-based ``[x, y, w, h]`` box (pixels)."""
        self.batched.state = TargetState()
        self.batched.add(img, [list(bbox)], ids=[0])

    def track(self, img: np.ndarray) -> dict[str, Any]:
        """Track into ``img``: ``{'bbox': [x, y, w, h] (floats, pixels), 'best_score': float}``."""
        if len(self.batched) == 0:
            raise RuntimeError("SiamRPNTracker.track called before init")
        r = self.batched.track(img)
        return {"bbox": r.bbox[0].tolist(), "best_score": float(r.best_score[0])}
