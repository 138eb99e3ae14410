"""The differentiable DeepMOT SiamRPN step: gradients, agreement with inference, no state mutation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from trackers.siamrpn.anchors import anchor_grid, cosine_window
from trackers.siamrpn.tracker import BatchedSiamRPNTracker, TrackParams, propose, update_state
from trackers.siamrpn.train_step import commit, selected_boxes, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = TrackParams(instance_size=143, base_size=0)   # S = 3, K = 45 anchors
ALEX = TrackParams(instance_size=287, base_size=0, penalty_k=0.16, window_influence=0.40, lr=0.30)


def _small_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    n, k = 2, 5 * 9
    cls = torch.randn(n, 10, 3, 3, generator=g, dtype=torch.float64)
    loc = (0.3 * torch.randn(n, 20, 3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    center = torch.rand(n, 2, generator=g, dtype=torch.float64) * 300
    size = 20 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 80
    anchors = torch.from_numpy(anchor_grid(3, 8, SMALL.ratios, SMALL.scales))
    window = torch.from_numpy(cosine_window(3, 5))
    assert anchors.shape[0] == k
    return cls, loc, center, size, anchors, window


@pytest.mark.parametrize("smoothing", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_box_gradient_wrt_loc_passes_gradcheck(seed, smoothing):
    cls, loc, center, size, anchors, window = _small_case(seed)
    frozen = propose(cls, loc.detach(), size, anchors, window, SMALL)

    def f(loc_):
        # the anchor choice and the penalty (hence lr) are constants of the step, as in DeepMOT
        props = replace(propose(cls, loc_, size, anchors, window, SMALL), best=frozen.best,
                        penalty=frozen.penalty)
        return selected_boxes(props, center, size, SMALL, size_smoothing=smoothing)

    assert torch.autograd.gradcheck(f, (loc,), eps=1e-6, atol=1e-6)
    # only the 4 regression channels of the selected anchor receive gradient
    (f(loc) * torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)).sum().backward()
    nonzero = (loc.grad.reshape(2, 4, -1) != 0).sum(dim=(1, 2))
    assert nonzero.tolist() == [4, 4]


def test_selected_box_is_inference_pre_smoothing_box():
    cls, loc, center, size, anchors, window = _small_case(2)
    props = propose(cls, loc.detach(), size, anchors, window, SMALL)
    raw = selected_boxes(props, center, size, SMALL)
    smooth = selected_boxes(props, center, size, SMALL, size_smoothing=True)
    # inference's update without clipping (huge image) is the smoothed box; its centre is the raw centre
    new_c, new_s = update_state(center, size, props, SMALL, (10 ** 6, 10 ** 6))
    torch.testing.assert_close((smooth[:, :2] + smooth[:, 2:]) / 2, new_c)
    torch.testing.assert_close(smooth[:, 2:] - smooth[:, :2], new_s)
    torch.testing.assert_close((raw[:, :2] + raw[:, 2:]) / 2, new_c)
    # raw size solves the smoothing equation: new = old (1 - lr) + raw lr
    lr = props.lr(SMALL)[:, None]
    torch.testing.assert_close(size * (1 - lr) + (raw[:, 2:] - raw[:, :2]) * lr, new_s)


@pytest.fixture(scope="module")
def fx(pysot_ref):
    """Our network on the PySOT reference's weights (the tiny SiamRPN in the repository, the
    full-size one in CI's ../shared) and the reference run."""
    return pysot_ref.model(), pysot_ref


def test_train_step_matches_pysot_run_and_does_not_mutate(pysot_run):
    """train_step on PySOT's recorded network outputs (the stand-in checks the crops are PySOT's):
    PySOT's scores and boxes, the state untouched until commit, repeatable."""
    tracker = BatchedSiamRPNTracker(pysot_run.network(), ALEX)
    tracker.add(pysot_run.full_frame(0), pysot_run.init_box[None])
    ref = pysot_run.ref
    for t in range(1, 5):
        frame = pysot_run.full_frame(t)
        before = (tracker.state.center.clone(), tracker.state.size.clone())
        out = train_step(tracker, frame, size_smoothing=True)
        again = train_step(tracker, frame, size_smoothing=True)
        torch.testing.assert_close(tracker.state.center, before[0])      # not mutated
        torch.testing.assert_close(tracker.state.size, before[1])
        torch.testing.assert_close(out.boxes, again.boxes)               # repeatable
        assert out.cls_logits.shape == (1, 2205, 2) and out.anchors_xyxy.shape == (1, 2205, 4)
        fr = ref["frames"][t]
        assert abs(float(out.best_score[0]) - fr["best_score"]) <= 1e-5
        box = out.boxes.detach().double()[0]
        if fr["center_pos"][1] > 0:   # unclipped frame: DeepMOT's smoothed box is PySOT's box
            np.testing.assert_allclose(torch.cat([box[:2], box[2:] - box[:2]]).numpy(), fr["bbox"], atol=1e-3)
        np.testing.assert_allclose((box[2:] - box[:2]).numpy(), fr["size"], atol=1e-3)
        commit(tracker, out)
        np.testing.assert_allclose(tracker.state.boxes_xywh()[0].numpy(), fr["bbox"], atol=1e-3)
        # the best anchor's softmax is the reported score; its projection holds the search-crop geometry
        p = torch.softmax(out.cls_logits[0, out.best[0]].detach(), 0)[1]
        assert abs(float(p) - fr["best_score"]) <= 1e-5


def test_gradients_reach_model_and_repeat_from_same_state(fx):
    """train_step on our network with PySOT's weights, the reference target and a second one:
    gradients reach the backbone and both heads, BN statistics stay, the reference target's score
    and committed box are PySOT's, and committing equals inference's track()."""
    model, ref = fx
    frames, init_box = ref.frames, ref.init_box
    h, w = frames.shape[1:3]
    boxes = np.stack([init_box, init_box + [0.3 * w, 0.3 * h, 10, 0]])
    tracker = BatchedSiamRPNTracker(model)
    tracker.add(frames[0], boxes)
    bn = model.backbone.features[1]
    stats = bn.running_mean.clone()
    model.train()                     # train_step must still use BN running statistics
    try:
        model.zero_grad()
        out = train_step(tracker, frames[1])
    finally:
        model.eval()
    torch.testing.assert_close(bn.running_mean, stats)
    assert out.boxes.requires_grad and out.cls_logits.requires_grad and out.ids == [0, 1]
    assert abs(float(out.best_score[0]) - ref.ref["frames"][1]["best_score"]) <= 1e-5
    (out.boxes.sum() + out.cls_logits[..., 1].mean()).backward()
    for name in ("backbone.features.0.weight", "rpn_head.loc.head.3.weight", "rpn_head.cls.conv_kernel.0.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # committing gives the same state as inference's track() from the same start, PySOT's for target 0
    inf = BatchedSiamRPNTracker(model)
    inf.add(frames[0], boxes)
    res = inf.track(frames[1])
    commit(tracker, out)
    torch.testing.assert_close(tracker.state.boxes_xywh(), res.bbox, atol=1e-3, rtol=0)
    np.testing.assert_allclose(tracker.state.boxes_xywh()[0].numpy(), ref.ref["frames"][1]["bbox"], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="at least one"):
        tracker.remove(tracker.ids)
        train_step(tracker, frames[2])
