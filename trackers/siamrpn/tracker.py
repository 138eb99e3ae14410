"""PySOT's ``SiamRPNTracker`` / ``SiamRPNLTTracker`` inference procedure, batched over N targets
(spec §3.5-3.8).

:class:`BatchedSiamRPNTracker` holds N targets of one video (ids, centres, sizes, padding colours,
template crops and stacked template features). One :meth:`~BatchedSiamRPNTracker.track` call
crops every target's search window, runs **one** network pass for all of them (per-target
templates: the depthwise correlation is grouped per sample by the model) and post-processes all
targets at once (:mod:`.postprocess`: penalties, cosine window, size smoothing, clipping).
:class:`SiamRPNTracker` is the PySOT-style single-target ``init``/``track`` API on top of it, so
one target through the batched path is the single-target path.

With ``params.long_term`` (config ``tracker: SiamRPNLTTracker``) each target follows PySOT's
long-term procedure on its own: lost targets are searched in a ``lost_instance_size`` crop with
almost no window, the others as usual; each mode's crops go through the network as one batch.

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

from trackers.siamrpn.anchors import anchor_grid, cosine_window
from trackers.siamrpn.crop import channel_average, crop_batch
from trackers.siamrpn.params import TrackParams
from trackers.siamrpn.postprocess import Proposals, check_finite, next_lost, propose, search_scales, \
    template_sizes, update_state, update_state_long_term

# the post-processing names stay importable from here (tests, train_step, bench use them)
__all__ = ["TrackParams", "TargetState", "Proposals", "TrackResult", "BatchedSiamRPNTracker",
           "SiamRPNTracker", "propose", "update_state", "update_state_long_term", "check_finite",
           "template_sizes", "search_scales", "take_features", "cat_features"]

Features = Tensor | list[Tensor]


# --------------------------------------------------------------------------- state
@dataclass
class TargetState:
    """The N targets' state; row i of every field belongs to ``ids[i]``.

    ``center`` ``(N, 2)`` float64 ``cx, cy`` and ``size`` ``(N, 2)`` float64 ``w, h`` (image pixels,
    PySOT convention ``cx = x + (w - 1) / 2``); ``channel_average`` ``(N, 3)`` float64 BGR padding
    colour fixed at init; ``templates`` ``(N, 3, Z, Z)`` float32 template crops (kept so training
    can re-encode them with gradient); ``zf`` template features, batch N (tensor or list per level);
    ``lost`` ``(N,)`` bool, the long-term tracker's per-target lost state (always False otherwise).
    """

    ids: list[int] = field(default_factory=list)
    center: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    size: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    channel_average: Tensor = field(default_factory=lambda: torch.zeros(0, 3, dtype=torch.float64))
    templates: Tensor | None = None
    zf: Features | None = None
    lost: Tensor | None = None

    def __post_init__(self) -> None:
        if self.lost is None:
            self.lost = torch.zeros(len(self.ids), dtype=torch.bool)

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
            zf=None if self.zf is None else take_features(self.zf, idx), lost=self.lost[idx])

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
            zf=cat_features(a.zf, b.zf), lost=torch.cat([a.lost, b.lost]))


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
        self._grids: dict[int, tuple[Tensor, Tensor]] = {}
        self.anchors, self.window = self.grid(p.instance_size)
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
            zf=put(s.zf, fresh.zf) if isinstance(s.zf, Tensor) else [put(f, g) for f, g in zip(s.zf, fresh.zf)],
            lost=put(s.lost, fresh.lost))

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

    def grid(self, instance_size: int) -> tuple[Tensor, Tensor]:
        """Anchors ``(K, 4)`` float32 ``cx, cy, w, h`` (crop pixels from the crop centre) and cosine
        window ``(K,)`` float64 of a ``instance_size`` search crop (cached per size)."""
        if instance_size not in self._grids:
            p = self.params
            size = p.score_size_for(instance_size)
            self._grids[instance_size] = (
                torch.from_numpy(anchor_grid(size, p.stride, p.ratios, p.scales, p.flavour)),
                torch.from_numpy(cosine_window(size, p.anchor_num)))
        return self._grids[instance_size]

    def search_crops(self, img: np.ndarray, state: TargetState | None = None,
                     instance_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Search crops ``(N, 3, X, X)`` float32 (``X = instance_size``, default ``params.instance_size``)
        for every target of ``state`` (default: the tracker's) and their ``scale_z`` ``(N,)`` float64."""
        s = self.state if state is None else state
        p = self.params
        x_size = p.instance_size if instance_size is None else instance_size
        scale_z, s_x = search_scales(s.size, p, x_size)
        x = crop_batch(img, s.center.numpy(), x_size, s_x.numpy(), s.channel_average.numpy(), p.flavour)
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
        """Track every live target into BGR uint8 ``img`` ``(H, W, 3)``; updates the state (PySOT
        ``track``, or ``SiamRPNLTTracker.track`` per target when ``params.long_term``)."""
        s = self.state
        if len(s) == 0:
            return TrackResult(ids=[], bbox=torch.zeros(0, 4, dtype=torch.float64),
                               best_score=torch.zeros(0, dtype=torch.float32))
        if self.params.long_term:
            return self._track_long_term(img)
        props = self._propose(img, s, self.params.instance_size, self.params.window_influence)
        center, size = (t.cpu() for t in update_state(s.center, s.size, props, self.params, img.shape[:2]))
        check_finite(center, size, s.ids, "state update (box regression overflow?)")
        s.center, s.size = center, size
        return TrackResult(ids=list(s.ids), bbox=s.boxes_xywh(), best_score=props.best_score().cpu())

    def _propose(self, img: np.ndarray, s: TargetState, instance_size: int, window_influence: float) -> Proposals:
        """Crop, network pass and proposals of the targets of ``s`` at one search size (no grad)."""
        anchors, window = self.grid(instance_size)
        x, _ = self.search_crops(img, s, instance_size)
        with torch.no_grad():
            cls, loc = self.network(s.zf, x)
            check_finite(cls, loc, s.ids)
            return propose(cls, loc, s.size, anchors, window, self.params, window_influence)

    def _track_long_term(self, img: np.ndarray) -> TrackResult:
        """PySOT's long-term step for every target: lost and normal targets are cropped at their
        mode's size and run as one batch per mode; the state is kept below ``confidence_low`` and
        stored unclipped (only the reported box is clipped); then the lost flags are updated."""
        s, p = self.state, self.params
        n = len(s)
        center, size = s.center.clone(), s.size.clone()
        box_c, box_s = center.clone(), size.clone()
        best = torch.zeros(n, dtype=torch.float32)
        for lost in (False, True):
            rows = (s.lost == lost).nonzero().flatten()
            if len(rows) == 0:
                continue
            sub = s.take(rows) if len(rows) < n else s
            instance_size, window_influence = p.mode(lost)
            props = self._propose(img, sub, instance_size, window_influence)
            c, z, bc, bz = (t.cpu() for t in update_state_long_term(sub.center, sub.size, props, p, img.shape[:2]))
            center[rows], size[rows], box_c[rows], box_s[rows] = c, z, bc, bz
            best[rows] = props.best_score().cpu()
        check_finite(center, size, s.ids, "state update (box regression overflow?)")
        s.center, s.size = center, size
        s.lost = next_lost(s.lost, best, p)
        return TrackResult(ids=list(s.ids), bbox=torch.cat([box_c - box_s / 2, box_s], dim=1), best_score=best)


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
