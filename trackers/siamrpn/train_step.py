"""The differentiable SiamRPN step of DeepMOT training (spec ``deepmot.md`` §6.1, §8.12-13).

``train_step(tracker, frame)`` runs the tracker's batched network pass on a frame **with autograd**
and returns, for every live target, the box at the selected anchor as a differentiable function
of the regression output ``loc`` (and through it of the network's weights), plus the anchor
classification logits for the focal loss. It does not touch the tracker state, so the DeepMOT
loop can repeat a frame from the same previous state; :func:`commit` then applies PySOT's state
update (the one inference applies) for the chosen step.

Which box is differentiable. Inference (PySOT ``track``) picks the anchor ``b`` maximising the
windowed, penalised score, decodes ``pred = (cx, cy, w, h)`` at ``b`` in search-crop pixels, and
updates ``centre <- centre + pred_c / scale_z``, ``size <- size (1 - lr) + pred_wh / scale_z * lr``
(``lr = penalty_b * score_b * LR``), then clips centre to the image and size to ``[10, image]``.
``train_step`` returns by default the **pre-smoothing, unclipped** box at ``b``::

    centre = prev_centre + pred_c / scale_z        size = pred_wh / scale_z

as ``x1, y1, x2, y2`` (``x1 = cx - w/2``). With ``size_smoothing=True`` it returns DeepMOT v1's
box instead, ``size = prev_size (1 - lr) + pred_wh / scale_z * lr``. The anchor choice ``b``,
``lr``, the penalties, the window, ``scale_z`` and the previous state are constants (no gradient);
the centre gets gradient through ``dx, dy`` and the size through ``dw, dh`` of anchor ``b``. The
state written by :func:`commit` is PySOT's smoothed and clipped update, i.e. exactly what
:meth:`BatchedSiamRPNTracker.track` would have produced from the same network outputs.

BatchNorm layers are put in eval mode (running statistics, no update), as DeepMOT v2 does.
The step always follows the short-term procedure (``instance_size`` crop, the configured window
influence, clipped state), also for a long-term tracker (``params.long_term``); it leaves the
long-term lost flags as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from deepmot.boxes import cxcywh_to_xyxy
from trackers.siamrpn.params import TrackParams
from trackers.siamrpn.postprocess import Proposals, check_finite, propose, update_state
from trackers.siamrpn.tracker import BatchedSiamRPNTracker, TargetState

__all__ = ["TrainStepOutput", "train_step", "commit", "selected_boxes", "freeze_batchnorm"]


@dataclass
class TrainStepOutput:
    """Result of :func:`train_step` for N targets (K = A*S*S anchors, rows ordered as ``ids``).

    * ``boxes`` ``(N, 4)`` ``x1, y1, x2, y2`` image pixels, differentiable (see module doc);
    * ``cls_logits`` ``(N, K, 2)`` (background, foreground) logits, differentiable; anchor order
      ``(a, y, x)`` as ``anchors_xyxy``;
    * ``anchors_xyxy`` ``(N, K, 4)`` float32 each target's anchors projected into the image
      (``centre + anchor / scale_z``), for labelling the focal loss by IoU with GT;
    * ``best`` ``(N,)`` selected anchor, ``best_score`` ``(N,)`` its foreground probability,
      ``lr`` ``(N,)`` float64 size-smoothing rate;
    * ``new_center``/``new_size`` ``(N, 2)`` float64: PySOT's clipped state update, for :func:`commit`.
    """

    ids: list[int]
    boxes: Tensor
    cls_logits: Tensor
    anchors_xyxy: Tensor
    best: Tensor
    best_score: Tensor
    lr: Tensor
    new_center: Tensor
    new_size: Tensor


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode (use running statistics, never update them)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def selected_boxes(props: Proposals, center: Tensor, size: Tensor, params: TrackParams,
                   size_smoothing: bool = False) -> Tensor:
    """Differentiable boxes ``(N, 4)`` xyxy (image pixels, dtype of ``props.pred``) at the selected
    anchors; ``center``/``size`` ``(N, 2)`` are the previous state (constants). See the module doc."""
    pred = props.best_pred()
    dev, dt = pred.device, pred.dtype
    scale = props.scale_z.to(dev, dt)[:, None]
    c = center.to(dev, dt) + pred[:, :2] / scale
    wh = pred[:, 2:] / scale
    if size_smoothing:
        lr = props.lr(params).to(dev, dt)[:, None]
        wh = size.to(dev, dt) * (1 - lr) + wh * lr
    return cxcywh_to_xyxy(torch.cat([c, wh], dim=1))


def train_step(tracker: BatchedSiamRPNTracker, frame: np.ndarray, state: TargetState | None = None, *,
               reencode_template: bool = True, size_smoothing: bool = False,
               search_transform: Callable[[Tensor], Tensor] | None = None,
               commit_state: bool = False) -> TrainStepOutput:
    """One differentiable tracking step of every target of ``state`` (default ``tracker.state``) into
    BGR uint8 ``frame`` ``(H, W, 3)``.

    ``reencode_template``: recompute the template features from the stored template crops with
    gradient (DeepMOT: the template branch trains too); otherwise use the stored features (no
    gradient through the template branch). ``search_transform`` maps the ``(N, 3, X, X)`` float32
    search crops (e.g. noise augmentation) before the network. The state is left unchanged unless
    ``commit_state`` (then :func:`commit` is applied to ``tracker``). Raises ``ValueError`` when there
    are no targets.
    """
    s = tracker.state if state is None else state
    if len(s) == 0:
        raise ValueError("train_step needs at least one live target; add targets first")
    model = tracker.model
    freeze_batchnorm(model)
    x, _ = tracker.search_crops(frame, s)
    if search_transform is not None:
        x = search_transform(x)
    with torch.enable_grad():
        zf = tracker.encode_templates(s.templates) if reencode_template else s.zf
        cls, loc = tracker.network(zf, x)
        check_finite(cls.detach(), loc.detach(), s.ids)
        props = propose(cls, loc, s.size, tracker.anchors, tracker.window, tracker.params)
        boxes = selected_boxes(props, s.center, s.size, tracker.params, size_smoothing)
        n, k = cls.shape[0], tracker.anchors.shape[0]
        cls_logits = cls.reshape(n, 2, k).transpose(1, 2)
    new_center, new_size = update_state(s.center, s.size, props, tracker.params, frame.shape[:2])
    check_finite(new_center, new_size, s.ids, "state update (box regression overflow?)")
    anc = tracker.anchors.to(torch.float64)
    scale = props.scale_z.cpu()[:, None, None]
    centres = s.center[:, None, :] + anc[None, :, :2] / scale
    anchors_xyxy = cxcywh_to_xyxy(torch.cat([centres, (anc[None, :, 2:] / scale).expand(n, k, 2)], dim=2))
    out = TrainStepOutput(ids=list(s.ids), boxes=boxes, cls_logits=cls_logits,
                          anchors_xyxy=anchors_xyxy.float(), best=props.best,
                          best_score=props.best_score(), lr=props.lr(tracker.params),
                          new_center=new_center.cpu(), new_size=new_size.cpu())
    if commit_state:
        commit(tracker, out)
    return out


def commit(tracker: BatchedSiamRPNTracker, out: TrainStepOutput) -> None:
    """Write the PySOT state update of ``out`` into ``tracker.state`` for the targets of ``out``
    (matched by id; targets removed since the step are skipped, others keep their state)."""
    row = {i: r for r, i in enumerate(tracker.state.ids)}
    pairs = [(j, row[i]) for j, i in enumerate(out.ids) if i in row]
    if not pairs:
        return
    src = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    dst = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    center, size = tracker.state.center.clone(), tracker.state.size.clone()
    center[dst] = out.new_center[src]
    size[dst] = out.new_size[src]
    tracker.state.center, tracker.state.size = center, size
