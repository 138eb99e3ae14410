"""Per-target post-processing of one SiamRPN track step, vectorised over N targets (spec §3.6-3.8).

From the network's ``cls``/``loc`` maps to the new target state: foreground scores, box decoding
against the anchors, PySOT's scale/ratio penalties and cosine window, the selection of the best
anchor (:func:`propose`), then the state update with size smoothing and clipping
(:func:`update_state`, and :func:`update_state_long_term` for ``SiamRPNLTTracker``). Also the
search/template window geometry (:func:`template_sizes`, :func:`search_scales`).

Numerics follow PySOT: scores and decoded boxes in float32 (as the network's outputs), penalties,
window and state in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from trackers.siamrpn.params import TrackParams

__all__ = ["Proposals", "propose", "update_state", "update_state_long_term", "next_lost",
           "check_finite", "context_side", "template_sizes", "search_scales"]


# --------------------------------------------------------------------------- geometry
def context_side(size: Tensor, context_amount: float) -> Tensor:
    """``sqrt(w_z * h_z)`` with ``w_z = w + ca * (w + h)``: ``(N,)`` float64 image pixels."""
    ctx = context_amount * size.sum(dim=1)
    return torch.sqrt((size[:, 0] + ctx) * (size[:, 1] + ctx))


def template_sizes(size: Tensor, params: TrackParams) -> Tensor:
    """Template window sides ``round(s_z)`` (half to even, as PySOT's ``round``): ``(N,)`` int64."""
    return torch.round(context_side(size, params.context_amount)).long()


def search_scales(size: Tensor, params: TrackParams, instance_size: int | None = None) -> tuple[Tensor, Tensor]:
    """``scale_z = exemplar / s_z`` ``(N,)`` float64 and the integer search window ``round(s_x)``
    ``(N,)`` int64, ``s_x = s_z * instance / exemplar`` (image pixels); ``instance_size`` defaults to
    ``params.instance_size`` (the long-term tracker passes ``lost_instance_size`` for lost targets)."""
    instance = params.instance_size if instance_size is None else instance_size
    s_z = context_side(size, params.context_amount)
    scale_z = params.exemplar_size / s_z
    s_x = s_z * (instance / params.exemplar_size)
    return scale_z, torch.round(s_x).long()


# --------------------------------------------------------------------------- proposals
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


def _sz(w: Tensor, h: Tensor) -> Tensor:
    pad = (w + h) * 0.5
    return torch.sqrt((w + pad) * (h + pad))


def _change(r: Tensor) -> Tensor:
    return torch.maximum(r, 1.0 / r)


def propose(cls: Tensor, loc: Tensor, size: Tensor, anchors: Tensor, window: Tensor,
            params: TrackParams, window_influence: float | None = None) -> Proposals:
    """Score, decode, penalise and select for N targets at once (PySOT ``track`` steps 3-5).

    ``cls`` ``(N, 2A, S, S)``, ``loc`` ``(N, 4A, S, S)`` network outputs; ``size`` ``(N, 2)`` float64
    current target sizes (image pixels); ``anchors`` ``(K, 4)`` float32 ``cx, cy, w, h``; ``window``
    ``(K,)`` float64; ``window_influence`` defaults to ``params.window_influence``. ``pred`` keeps the
    autograd graph of ``loc``; everything used for the selection (score, penalty, window) is
    computed from detached values.
    """
    n = cls.shape[0]
    k = anchors.shape[0]
    dev = loc.device
    wi = params.window_influence if window_influence is None else window_influence
    score = torch.softmax(cls.detach().reshape(n, 2, k), dim=1)[:, 1]
    delta = loc.reshape(n, 4, k)
    anc = anchors.to(device=dev, dtype=loc.dtype)
    pred = torch.stack([delta[:, 0] * anc[:, 2] + anc[:, 0],
                        delta[:, 1] * anc[:, 3] + anc[:, 1],
                        torch.exp(delta[:, 2]) * anc[:, 2],
                        torch.exp(delta[:, 3]) * anc[:, 3]], dim=1)
    pw, ph = pred[:, 2].detach(), pred[:, 3].detach()
    size = size.to(dev)
    scale_z = params.exemplar_size / context_side(size, params.context_amount)
    # dtypes as PySOT: terms of the prediction in float32, the state's terms in float64
    s_c = _change(_sz(pw, ph).double() / _sz(size[:, 0] * scale_z, size[:, 1] * scale_z)[:, None])
    r_c = _change((size[:, 0] / size[:, 1])[:, None] / (pw / ph).double())
    penalty = torch.exp(-(r_c * s_c - 1) * params.penalty_k)
    pscore = penalty * score.double()
    pscore = pscore * (1 - wi) + window.to(dev) * wi
    best = torch.argmax(pscore, dim=1)
    return Proposals(score=score, pred=pred, penalty=penalty, best=best, scale_z=scale_z)


# --------------------------------------------------------------------------- state updates
def _moved(center: Tensor, size: Tensor, props: Proposals, params: TrackParams) -> tuple[Tensor, Tensor]:
    """Centre moved by the selected box and size smoothed with ``lr`` (PySOT steps 6-7), unclipped."""
    dev = center.device
    bbox = props.best_pred().detach().double().to(dev) / props.scale_z.to(dev)[:, None]
    lr = props.lr(params).to(dev)[:, None]
    return center + bbox[:, :2], size * (1 - lr) + bbox[:, 2:] * lr


def _clip(center: Tensor, size: Tensor, params: TrackParams, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """PySOT's ``_bbox_clip``: centre into ``[0, W] x [0, H]``, size into ``[min_size, W] x [min_size, H]``."""
    h, w = image_hw
    lim = torch.tensor([float(w), float(h)], dtype=torch.float64, device=center.device)
    return torch.minimum(center.clamp(min=0.0), lim), torch.minimum(size, lim).clamp(min=params.min_size)


def update_state(center: Tensor, size: Tensor, props: Proposals, params: TrackParams,
                 image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """PySOT's state update (steps 6-8): move the centre by the selected box, smooth the size with
    ``lr``, clip. Returns new ``center`` and ``size`` ``(N, 2)`` float64 (detached)."""
    new_center, new_size = _moved(center, size, props, params)
    return _clip(new_center, new_size, params, image_hw)


def update_state_long_term(center: Tensor, size: Tensor, props: Proposals, params: TrackParams,
                           image_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``SiamRPNLTTracker``'s update (§3.8): targets whose best score is below ``confidence_low`` keep
    their centre and size, the others move as in :func:`update_state`; the **state is not clipped**,
    only the reported box is. Returns ``(state_center, state_size, box_center, box_size)``, each
    ``(N, 2)`` float64 image pixels."""
    moved_c, moved_s = _moved(center, size, props, params)
    keep = (props.best_score().to(center.device) < params.confidence_low)[:, None]
    new_center = torch.where(keep, center, moved_c)
    new_size = torch.where(keep, size, moved_s)
    box_center, box_size = _clip(new_center, new_size, params, image_hw)
    return new_center, new_size, box_center, box_size


def next_lost(lost: Tensor, best_score: Tensor, params: TrackParams) -> Tensor:
    """The long-term state after a step (hysteresis): lost when ``best_score < confidence_low``,
    found again when ``best_score > confidence_high``, unchanged in between. ``(N,)`` bool."""
    best_score = best_score.to(lost.device)
    return torch.where(best_score < params.confidence_low, torch.ones_like(lost),
                       torch.where(best_score > params.confidence_high, torch.zeros_like(lost), lost))


def check_finite(a: Tensor, b: Tensor, ids: Sequence[int], what: str = "network outputs cls/loc") -> None:
    """Raise ``FloatingPointError`` naming the targets (rows of ``a``/``b``) holding NaN/inf; PySOT
    would instead fail later inside the next crop with an unrelated message."""
    bad = ~(torch.isfinite(a).flatten(1).all(1) & torch.isfinite(b).flatten(1).all(1))
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise FloatingPointError(f"non-finite {what} for target id(s) {[ids[r] for r in rows]}; "
                                 "check the weights (uncalibrated BatchNorm, exploding regression?)")
