"""The DeepMOT criterion: differentiable MOTA (dMOTA) and MOTP (dMOTP) for one frame.

One call per frame of a training clip. From the tracker's boxes (with gradient) and the GT:

1. ``D = deepmot_distance(tracks, gt)`` (rows = tracks, columns = GT; :mod:`deepmot.boxes`);
   pairs with ``IoU < iou_threshold`` are *gated*: they can never be true positives, and the
   soft assignment sees ``D + GATE_OFFSET`` there (``gate="hard"``, the default and the
   convention the DHN was trained with). ``gate="soft"``: it sees
   ``D + GATE_OFFSET * sigmoid((iou_threshold - IoU) / gate_width)`` with a differentiable IoU,
   so near-misses keep a gradient (as ``gate_width -> 0`` this becomes the hard gate);
   ``gate="none"``: it sees ``D`` (the reference code's input). The hard TP mask below always
   uses the hard gate (CLEAR-MOT's rule), whatever the soft assignment sees.
2. ``A = assignment(D_gated)``, a soft assignment in [0, 1]: the frozen DHN
   (``assignment="dhn"``, the paper), or the entropic optimal transport plan of ``[D | delta_s]``
   (``assignment="sinkhorn"``, :func:`sinkhorn_assignment`, no learned weights; exact in its
   low-temperature limit).
3. ``C^r = softmax_row(s * [A | delta])`` and ``C^c = softmax_col(s * [A ; delta])`` with the
   "no match" column / "missed" row of constant ``delta`` and temperature ``s``:
   ``FP~ = sum C^r[:, M]``, ``FN~ = sum C^c[N, :]``, and ``S = C^c[:N]`` gives the soft
   identity switches ``IDS~`` against the :class:`IdentityMemory`.
4. ``dMOTA error = (FP~ + FN~ + w_ids * IDS~) / M`` and ``dMOTP = mean of D over the hard TP
   mask``; ``loss = dMOTA error + w_motp * dMOTP``.

The hard TP mask is CLEAR-MOT's own per-frame matching (what py-motmetrics counts): previous
matches that are still allowed are kept first, then an exact gated min-cost max-cardinality
matching (:func:`deepmot.matching.linear.gated_linear_assignment`) pairs the rest. It is a
constant, so dMOTP trains only the boxes (through ``D``), never the DHN output. The identity
memory is updated from it, as CLEAR-MOT does (last matched track id per GT id, kept across gaps).

Exact limit: with ``A`` equal to that hard matching (0/1) and a large temperature, ``FP~``,
``FN~`` and ``IDS~`` are exactly the frame's false positives, misses and switches of
``motmetrics.MOTAccumulator`` fed with ``D`` (NaN on gated pairs), under these conventions:

* a remembered object matched to *another* track is a switch even when its remembered track
  no longer exists (motmetrics does so; ``ids_dead_tracks=False`` drops those, as the literal
  "still existing track" reading of the paper would);
* no ``max_switch_time`` (motmetrics' default ``inf``): memory never expires.

Reference hyper-parameters (``specs/deepmot.md`` §5.2, §5.5): DeepMOT v1 code ``delta=0.7,
s=10``; v2 code ``delta=0.5, s=100``; ``w_motp=5`` in both; ``w_ids=1`` (v1). Defaults here:
``delta=0.5`` (the DHN's own 0.5 decision threshold), ``s=10``, ``w_ids=1``, ``w_motp=5``.

Frames without GT: the counts are still returned (``FP~ = N``, constants), but the dMOTA
error is defined as 0 (per-frame MOTA is undefined), so the loss is 0 with zero gradient.
Frames without tracks: ``FN~ = M`` and the error is 1 (constant, zero gradient).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from deepmot.boxes import GATE_OFFSET, box_iou, deepmot_distance, forbidden_mask, gate_distance
from deepmot.matching.linear import gated_linear_assignment
from deepmot.matching.sinkhorn import sinkhorn_log

__all__ = [
    "IdentityMemory",
    "DeepMOTOutput",
    "DeepMOTLoss",
    "soft_counts",
    "soft_id_switches",
    "clear_mot_matching",
    "sinkhorn_assignment",
    "gated_cost",
    "ASSIGNMENTS",
    "GATES",
]

IDS_MODES = ("paper", "v1")
ASSIGNMENTS = ("dhn", "sinkhorn")
GATES = ("hard", "soft", "none")


def _as_ids(ids: Tensor | Sequence[int], what: str) -> Tensor:
    """``(K,)`` integer ids -> CPU int64 tensor; ValueError if not 1-D or not unique."""
    t = torch.as_tensor(ids).detach().cpu()
    if t.dim() != 1:
        raise ValueError(f"{what} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{what} must be integers, got {t.dtype}")
    t = t.to(torch.int64)
    if t.numel() != torch.unique(t).numel():
        raise ValueError(f"{what} must be unique within a frame, got {t.tolist()}")
    return t


@dataclass(frozen=True)
class IdentityMemory:
    """CLEAR-MOT's identity memory: the last matched track id per GT id, across a clip.

    ``gt_ids`` (K,) sorted, unique and ``track_ids`` (K,), int64 on CPU. Immutable: use
    :meth:`update` to get the next frame's memory. Start each clip with ``IdentityMemory()``.
    """

    gt_ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    track_ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.gt_ids.numel())

    def lookup(self, gt_ids: Tensor) -> tuple[Tensor, Tensor]:
        """For ``(M,)`` GT ids: ``known (M,) bool`` and the remembered track id ``(M,)`` (0 if unknown)."""
        if len(self) == 0 or gt_ids.numel() == 0:
            return torch.zeros(gt_ids.shape, dtype=torch.bool), torch.zeros(gt_ids.shape, dtype=torch.int64)
        pos = torch.searchsorted(self.gt_ids, gt_ids).clamp(max=len(self) - 1)
        known = self.gt_ids[pos] == gt_ids
        return known, torch.where(known, self.track_ids[pos], torch.zeros_like(pos))

    def update(self, gt_ids: Tensor, track_ids: Tensor) -> "IdentityMemory":
        """New memory where each of ``gt_ids (K,)`` now maps to ``track_ids (K,)``; others kept."""
        gt_ids, track_ids = gt_ids.to(torch.int64).cpu(), track_ids.to(torch.int64).cpu()
        keep = ~torch.isin(self.gt_ids, gt_ids)
        g = torch.cat((self.gt_ids[keep], gt_ids))
        t = torch.cat((self.track_ids[keep], track_ids))
        order = torch.argsort(g)
        return IdentityMemory(g[order], t[order])

    def as_dict(self) -> dict[int, int]:
        """``{gt_id: track_id}`` (for logging and tests)."""
        return dict(zip(self.gt_ids.tolist(), self.track_ids.tolist()))


@dataclass
class DeepMOTOutput:
    """Result of one :class:`DeepMOTLoss` call (0-d tensors unless noted).

    ``loss = dmota + w_motp * dmotp``; ``dmota``: the error ``(FP~ + FN~ + w_ids*IDS~) / M``
    (0 when M = 0); ``dmotp``: mean DeepMOT distance over the hard TP pairs (0 if none);
    ``fp``, ``fn``, ``ids``: soft counts; ``tp_mask``: ``(N, M)`` bool hard TP (CLEAR-MOT
    matching); ``memory``: the updated :class:`IdentityMemory`; ``distance``: ``(N, M)`` D;
    ``assignment``: ``(N, M)`` DHN output; ``num_gt``: M (frames with M = 0 give no loss).
    """

    loss: Tensor
    dmota: Tensor
    dmotp: Tensor
    fp: Tensor
    fn: Tensor
    ids: Tensor
    tp_mask: Tensor
    memory: IdentityMemory
    distance: Tensor
    assignment: Tensor
    num_gt: int


def soft_counts(assign: Tensor, delta: float, temperature: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft FP and FN of an ``(N, M)`` soft assignment (values in [0, 1], large = match).

    Returns ``fp`` (0-d) = mass of the appended "no match" column of the row softmax,
    ``fn`` (0-d) = mass of the appended "missed" row of the column softmax, ``S`` ``(N, M)``
    = the column softmax without that row, and ``missed`` ``(M,)`` bool = columns whose
    column-softmax argmax is the "missed" row.
    """
    n, m = assign.shape
    z = assign * temperature
    row = torch.cat((z, z.new_full((n, 1), delta * temperature)), dim=1)
    col = torch.cat((z, z.new_full((1, m), delta * temperature)), dim=0)
    cr = torch.softmax(row, dim=1)
    cc = torch.softmax(col, dim=0)
    missed = cc.detach().argmax(dim=0) == n if m else torch.zeros(0, dtype=torch.bool, device=assign.device)
    return cr[:, m].sum(), cc[n].sum(), cc[:n], missed


def soft_id_switches(s: Tensor, prev_onehot: Tensor, known: Tensor, missed: Tensor,
                     mode: str = "paper", dead_tracks: bool = True) -> Tensor:
    """Soft identity switches from ``S`` ``(N, M)`` (column softmax without the "missed" row).

    ``prev_onehot`` ``(N, M)`` bool: row of each object's remembered track (all False if that
    track is absent this frame); ``known`` ``(M,)`` bool: the object has a memory; ``missed``
    ``(M,)`` bool (used by ``mode="v1"`` only). Vectorised over objects.

    ``"paper"``: sum over remembered objects of their column mass outside the remembered
    track's row (the whole column if that track is gone, unless ``dead_tracks=False``).
    ``"v1"`` (DeepMOT v1 code's case analysis, ``specs/deepmot.md`` §5.3): the same, plus the
    whole column mass of *new* objects the column softmax calls missed (case A3). Its other
    cases (A1, B1, B2, C) reduce to the paper form; its argmax mask/memory are not used here.
    """
    if mode not in IDS_MODES:
        raise ValueError(f"ids_mode must be one of {IDS_MODES}, got {mode!r}")
    colsum = s.sum(dim=0)
    on_prev = (s * prev_onehot.to(s.dtype)).sum(dim=0)
    counted = known if dead_tracks else known & prev_onehot.any(dim=0)
    per_obj = torch.where(counted, colsum - on_prev, torch.zeros_like(colsum))
    if mode == "v1":
        per_obj = per_obj + torch.where(~known & missed, colsum, torch.zeros_like(colsum))
    return per_obj.sum()


def clear_mot_matching(distance: Tensor, forbidden: Tensor, prev_onehot: Tensor) -> Tensor:
    """CLEAR-MOT's hard per-frame matching -> ``(N, M)`` bool TP mask (py-motmetrics' rule).

    ``distance`` ``(N, M)``; ``forbidden`` ``(N, M)`` bool (gated pairs, never matched);
    ``prev_onehot`` ``(N, M)`` bool rows of the remembered tracks. First every remembered pair
    that is allowed is kept (a track remembered by several objects goes to the first of them,
    in column order, as motmetrics does); then the remaining rows and columns get the exact
    min-cost max-cardinality matching over allowed pairs (scipy, on detached float64).
    """
    n, m = distance.shape
    keep = (prev_onehot & ~forbidden).cpu()
    if n and m:
        first = keep.to(torch.int32).argmax(dim=1, keepdim=True)
        keep &= torch.arange(m)[None, :] == first
    blocked = forbidden.cpu() | keep.any(dim=1, keepdim=True) | keep.any(dim=0, keepdim=True)
    rows, cols = gated_linear_assignment(distance.detach().cpu().double().numpy(), blocked.numpy())
    tp = keep.clone()
    tp[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return tp.to(distance.device)


def gated_cost(distance: Tensor, iou: Tensor, iou_threshold: float | None, gate: str = "hard",
               width: float = 0.05) -> Tensor:
    """The ``(N, M)`` matrix the soft assignment sees, from ``distance`` and ``iou`` ``(N, M)``.

    ``"hard"``: ``D + GATE_OFFSET`` where ``IoU < iou_threshold`` (decided on the detached IoU,
    so no gradient crosses the gate); ``"soft"``: ``D + GATE_OFFSET * sigmoid((thr - IoU) /
    width)``, differentiable in IoU too; ``"none"`` (or ``iou_threshold=None``): ``D``.
    """
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    if iou_threshold is None or gate == "none":
        return distance
    if gate == "hard":
        return gate_distance(distance, forbidden_mask(iou.detach(), iou_threshold))
    return distance + GATE_OFFSET * torch.sigmoid((iou_threshold - iou) / width)


def sinkhorn_assignment(cost: Tensor, eps: float = 0.05, n_iter: int = 50,
                        dustbin: float = 0.5 * GATE_OFFSET) -> Tensor:
    """Soft assignment ``(N, M)`` in [0, 1] of a cost ``(N, M)`` by entropic optimal transport.

    The problem is ``[D | delta_s]`` with a dustbin: every track (row) sends mass 1, every GT
    (column) receives at most 1, and leaving a track or a GT unmatched costs ``dustbin`` each
    (an extra column of mass M and row of mass N, their corner costing 0), solved by the
    log-domain Sinkhorn of :func:`deepmot.matching.sinkhorn.sinkhorn_log` with regularisation
    ``eps`` (in cost units) for ``n_iter`` iterations, differentiable through them. ``+inf``
    entries are forbidden pairs. As ``eps -> 0`` the plan becomes the optimal matching of
    ``sum of matched costs + dustbin * (unmatched tracks + unmatched GT)``, i.e. a pair is
    worth matching when its cost is below ``2 * dustbin``: with the default ``GATE_OFFSET / 2``,
    when it is not gated -- the decision rule of the DHN's training data. (With ``dustbin >
    (min(N, M) + 1) / 2`` and forbidden pairs at ``+inf`` it is the min-cost max-cardinality
    matching of :func:`deepmot.matching.linear.gated_linear_assignment`.)
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return cost.new_zeros((n, m))
    dt = torch.promote_types(cost.dtype, torch.float32)
    aug = torch.full((n + 1, m + 1), float(dustbin), dtype=dt, device=cost.device)
    aug[n, m] = 0.0
    aug = torch.cat((torch.cat((cost.to(dt), aug[:n, m:]), 1), aug[n:]), 0)
    log_a = torch.zeros(n + 1, dtype=dt, device=cost.device)
    log_b = torch.zeros(m + 1, dtype=dt, device=cost.device)
    log_a[n], log_b[m] = math.log(m), math.log(n)
    plan = sinkhorn_log(aug[None], log_a[None], log_b[None], eps, n_iter=n_iter)[0][0]
    return plan[:n, :m].to(cost.dtype)


def _check_boxes(boxes: Tensor, what: str) -> None:
    """ValueError unless ``boxes`` is a float ``(K, 4)`` tensor of finite values (names the index)."""
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point() or boxes.dim() != 2 \
            or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{what} boxes must be a float (K, 4) tensor, got {shape}")
    bad = (~torch.isfinite(boxes.detach())).any(dim=1)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"{what} boxes contain NaN/inf at {what} index {idx[0]} "
                         f"(all offending indices: {idx}): {boxes[idx[0]].tolist()}")


def _check_args(track_boxes: Tensor | None = None, gt_boxes: Tensor | None = None,
                image_size: Sequence[float] | None = None, **params: float | None) -> None:
    """ValueError naming the real cause when the criterion is given what it cannot score:
    a hyper-parameter in ``params`` that is not finite (``temperature`` must be > 0, the weights
    >= 0, ``iou_threshold`` None or >= 0); an inverted GT box (``x2 < x1`` or ``y2 < y1``); a
    track/GT pair whose IoU is undefined (zero or negative union: two zero-area boxes, or an
    inverted track box); an ``image_size`` that is not two numbers > 0. (Other inverted track
    boxes are scored as motmetrics scores them.)"""
    for name, v in params.items():
        if v is None and name == "iou_threshold":
            continue
        low = {"temperature": 0.0}.get(name)
        if (not isinstance(v, (int, float)) or not math.isfinite(v) or (low is not None and v <= low)
                or (name.startswith("w_") and v < 0) or (name == "iou_threshold" and v < 0)):
            raise ValueError(f"DeepMOTLoss: {name}={v!r} is invalid (finite; temperature > 0, weights >= 0, "
                             "iou_threshold >= 0 or None)")
    if gt_boxes is not None and gt_boxes.numel():
        inv = (gt_boxes[:, 2:] < gt_boxes[:, :2]).any(dim=1)
        if inv.any():
            i = int(inv.nonzero()[0])
            raise ValueError(f"gt box {i} is inverted ({gt_boxes[i].tolist()}; x1,y1,x2,y2 needs x2 >= x1 and y2 >= y1)")
    if track_boxes is not None and gt_boxes is not None and track_boxes.numel() and gt_boxes.numel():
        bad = ~torch.isfinite(box_iou(track_boxes.detach(), gt_boxes.detach().to(track_boxes)))
        if bad.any():  # union <= 0: zero-area boxes on both sides, or an inverted track box
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"track box {i} {track_boxes[i].tolist()} and gt box {j} {gt_boxes[j].tolist()}: "
                             "their IoU is undefined (zero or negative union: zero-area or inverted boxes)")
    if image_size is not None:
        size = [float(v) for v in image_size] if len(image_size) == 2 else []
        if len(size) != 2 or not all(math.isfinite(v) and v > 0 for v in size):
            raise ValueError(f"image_size must be (W, H) with two finite numbers > 0, got {tuple(image_size)}")


class DeepMOTLoss(nn.Module):
    """DeepMOT criterion around a frozen DHN: ``loss = dMOTA error + w_motp * dMOTP`` per frame.

    ``dhn``: callable ``(B, N, M) -> (B, N, M)`` in (0, 1) (a :class:`DeepHungarianNet` or any
    stand-in). An ``nn.Module`` DHN is frozen (no parameter gradients) and kept in eval mode,
    even if :meth:`train` is called on this criterion. On CUDA the DHN runs with cuDNN
    disabled, because cuDNN's RNN backward refuses eval mode; gradients reach its input.
    ``iou_threshold``: pairs with IoU below it are gated (None = no gating). ``delta``,
    ``temperature``: the "no match" value and softmax scale. ``w_ids``, ``w_motp``: loss
    weights. ``ids_mode``: ``"paper"`` or ``"v1"`` (see :func:`soft_id_switches`);
    ``ids_dead_tracks``: count switches away from a remembered track that no longer exists.
    ``assignment``: ``"dhn"`` (default) or ``"sinkhorn"`` (:func:`sinkhorn_assignment` with
    ``sinkhorn_eps``, ``sinkhorn_iters``; ``dhn`` may then be None). ``gate``: what the soft
    assignment sees of gated pairs, ``"hard"`` (default), ``"soft"`` (width ``gate_width`` in
    IoU) or ``"none"`` (see :func:`gated_cost`); the hard TP mask and dMOTP always use the
    hard gate at ``iou_threshold``.
    """

    def __init__(self, dhn: Callable[[Tensor], Tensor] | None, iou_threshold: float | None = 0.5,
                 delta: float = 0.5, temperature: float = 10.0, w_ids: float = 1.0,
                 w_motp: float = 5.0, ids_mode: str = "paper", ids_dead_tracks: bool = True,
                 assignment: str = "dhn", gate: str = "hard", gate_width: float = 0.05,
                 sinkhorn_eps: float = 0.05, sinkhorn_iters: int = 50):
        super().__init__()
        _check_args(delta=delta, temperature=temperature, w_ids=w_ids, w_motp=w_motp, iou_threshold=iou_threshold)
        if ids_mode not in IDS_MODES:
            raise ValueError(f"ids_mode must be one of {IDS_MODES}, got {ids_mode!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        if assignment == "dhn" and dhn is None:
            raise ValueError("assignment='dhn' needs a DHN (got dhn=None)")
        if not (gate_width > 0 and sinkhorn_eps > 0 and sinkhorn_iters >= 1):
            raise ValueError(f"need gate_width > 0, sinkhorn_eps > 0, sinkhorn_iters >= 1; got "
                             f"{gate_width}, {sinkhorn_eps}, {sinkhorn_iters}")
        if isinstance(dhn, nn.Module):
            dhn.requires_grad_(False)
            dhn.eval()
        self.dhn = dhn
        self.iou_threshold = iou_threshold
        self.delta = float(delta)
        self.temperature = float(temperature)
        self.w_ids = float(w_ids)
        self.w_motp = float(w_motp)
        self.ids_mode = ids_mode
        self.ids_dead_tracks = bool(ids_dead_tracks)
        self.assignment, self.gate, self.gate_width = assignment, gate, float(gate_width)
        self.sinkhorn_eps, self.sinkhorn_iters = float(sinkhorn_eps), int(sinkhorn_iters)

    def train(self, mode: bool = True) -> "DeepMOTLoss":
        """Set train/eval mode; the DHN itself always stays in eval mode (frozen)."""
        super().train(mode)
        if isinstance(self.dhn, nn.Module):
            self.dhn.eval()
        return self

    def assign(self, gated: Tensor) -> Tensor:
        """This criterion's soft assignment (its DHN or Sinkhorn) of an ``(N, M)`` cost -> ``(N, M)``
        in the cost's dtype and device, empty when N or M is 0. It applies no gate itself: the
        forward pass gates the box distance first; other costs (e.g. an appearance distance in
        [0, 1]) go in as they are."""
        n, m = gated.shape
        if n == 0 or m == 0:
            return gated.new_zeros((n, m))
        if self.assignment == "sinkhorn":
            return sinkhorn_assignment(gated, self.sinkhorn_eps, self.sinkhorn_iters)
        ctx = torch.backends.cudnn.flags(enabled=False) if gated.is_cuda else nullcontext()
        with ctx:
            out = self.dhn(gated.unsqueeze(0))
        if tuple(out.shape) != (1, n, m):
            raise ValueError(f"dhn returned shape {tuple(out.shape)}, expected {(1, n, m)}")
        return out[0].to(gated.dtype)

    def forward(self, track_boxes: Tensor, track_ids: Tensor | Sequence[int], gt_boxes: Tensor,
                gt_ids: Tensor | Sequence[int], image_size: tuple[float, float],
                memory: IdentityMemory | None = None) -> DeepMOTOutput:
        """One frame: ``track_boxes (N, 4)`` xyxy pixels (with grad), ``track_ids (N,)``,
        ``gt_boxes (M, 4)``, ``gt_ids (M,)``, ``image_size = (W, H)``, ``memory`` from the
        previous frame (None = start of a clip). Returns a :class:`DeepMOTOutput`.
        """
        _check_boxes(track_boxes, "track")
        _check_boxes(gt_boxes, "gt")
        _check_args(track_boxes, gt_boxes, image_size)
        tids, gids = _as_ids(track_ids, "track_ids"), _as_ids(gt_ids, "gt_ids")
        if tids.numel() != track_boxes.shape[0] or gids.numel() != gt_boxes.shape[0]:
            raise ValueError(f"got {track_boxes.shape[0]} track boxes / {tids.numel()} track ids, "
                             f"{gt_boxes.shape[0]} GT boxes / {gids.numel()} GT ids")
        memory = IdentityMemory() if memory is None else memory
        gt_boxes = gt_boxes.detach().to(track_boxes)
        n, m = track_boxes.shape[0], gt_boxes.shape[0]

        dist = deepmot_distance(track_boxes, gt_boxes, image_size)
        iou = box_iou(track_boxes if self.gate == "soft" else track_boxes.detach(), gt_boxes)
        forbidden = forbidden_mask(iou.detach(), self.iou_threshold)
        assign = self.assign(gated_cost(dist, iou, self.iou_threshold, self.gate, self.gate_width))

        known, prev_track = memory.lookup(gids)
        prev_onehot = ((tids[:, None] == prev_track[None, :]) & known[None, :]).to(dist.device)
        fp, fn, s, missed = soft_counts(assign, self.delta, self.temperature)
        ids = soft_id_switches(s, prev_onehot, known.to(dist.device), missed,
                               self.ids_mode, self.ids_dead_tracks)

        tp = clear_mot_matching(dist, forbidden, prev_onehot)
        rows, cols = tp.nonzero(as_tuple=True)
        new_memory = memory.update(gids[cols.cpu()], tids[rows.cpu()])

        # Keep every output attached to the boxes' graph (backward never fails on empty frames).
        zero = track_boxes.sum() * 0.0
        dmota = (fp + fn + self.w_ids * ids) / m if m else zero
        ntp = int(rows.numel())
        dmotp = (dist * tp.to(dist.dtype)).sum() / ntp if ntp else zero
        return DeepMOTOutput(loss=dmota + self.w_motp * dmotp + zero, dmota=dmota + zero,
                             dmotp=dmotp + zero, fp=fp + zero, fn=fn + zero, ids=ids + zero,
                             tp_mask=tp, memory=new_memory, distance=dist, assignment=assign,
                             num_gt=m)
