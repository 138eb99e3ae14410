"""PySOT's long-term tracker (``SiamRPNLTTracker``, spec pysot.md §3.8) in the batched tracker:
lost-mode numbers from the spec, per-target modes against a literal single-target transcription
of §3.6-3.8, and the long-term path equal to the short-term one while every target is confident."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint, load_siamrpn_config
from trackers.siamrpn.anchors import anchor_grid
from trackers.siamrpn.crop import get_subwindow
from trackers.siamrpn.postprocess import Proposals, next_lost, update_state_long_term
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS
from trackers.siamrpn.tracker import BatchedSiamRPNTracker, SiamRPNTracker, TrackParams

pytestmark = pytest.mark.usefixtures("one_thread")


def _paste(img: np.ndarray, tex: np.ndarray, x0: int, y0: int) -> None:
    h, w = img.shape[:2]
    ys, xs = slice(max(y0, 0), min(y0 + tex.shape[0], h)), slice(max(x0, 0), min(x0 + tex.shape[1], w))
    if ys.start < ys.stop and xs.start < xs.stop:
        img[ys, xs] = tex[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def video(seed: int, n_frames: int = 14, hw=(240, 320)):
    """Blurred random background, 4 textured boxes drifting slowly inside the image, a 5th one
    leaving it (so boxes get clipped), and a look-alike of box 0 crossing over it (so scores
    drop). Frames (T, H, W, 3) uint8, first-frame boxes (5, 4) xywh."""
    rng = np.random.default_rng(seed)
    h, w = hw
    bg = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (9, 9), 3)
    pos = np.array([[60, 50], [180, 40], [70, 150], [200, 140], [275, 100]], dtype=np.float64)
    pos += rng.uniform(-5, 5, (5, 2))
    sizes = rng.uniform(24, 44, (5, 2)).round()
    vel = np.concatenate([rng.uniform(-2, 2, (4, 2)), [[9.0, 1.0]]])
    tex = [cv2.resize(rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), (int(s[0]), int(s[1])),
                      interpolation=cv2.INTER_NEAREST) for s in sizes]
    frames = []
    for t in range(n_frames):
        img = bg.copy()
        for i in range(5):
            _paste(img, tex[i], *(pos[i] + t * vel[i]).round().astype(int))
        _paste(img, tex[0], int(pos[0, 0] - 40 + 8 * t), int(pos[0, 1] + 4))     # the look-alike
        frames.append(img)
    return np.stack(frames), np.concatenate([pos, sizes], axis=1)


@pytest.fixture(scope="module")
def tiny():
    model = build_siamrpn("siamrpn_alex_tiny")
    assert load_pysot_checkpoint(model, SYNTHETIC_WEIGHTS).ok
    return model.eval()


class ReferenceLT:
    """Spec §3.6-3.8 for ONE target, transcribed literally with numpy (the slow reference)."""

    def __init__(self, model, p: TrackParams):
        self.model, self.p = model, p

    def init(self, img, bbox):
        x, y, w, h = bbox
        self.center = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
        self.size = np.array([w, h], dtype=np.float64)
        w_z = w + self.p.context_amount * (w + h)
        h_z = h + self.p.context_amount * (w + h)
        s_z = round(np.sqrt(w_z * h_z))
        self.avg = img.mean(axis=(0, 1))
        with torch.no_grad():
            self.zf = self.model.template(get_subwindow(img, self.center, self.p.exemplar_size, s_z, self.avg))
        self.longterm = False

    def track(self, img):
        p = self.p
        w_z = self.size[0] + p.context_amount * self.size.sum()
        h_z = self.size[1] + p.context_amount * self.size.sum()
        s_z = np.sqrt(w_z * h_z)
        scale_z = p.exemplar_size / s_z
        inst = p.lost_instance_size if self.longterm else p.instance_size
        s = (inst - p.exemplar_size) // p.stride + 1 + p.base_size
        window = np.tile(np.outer(np.hanning(s), np.hanning(s)).flatten(), p.anchor_num)
        anchors = anchor_grid(s, p.stride, p.ratios, p.scales)
        s_x = s_z * (inst / p.exemplar_size)
        x = get_subwindow(img, self.center, inst, round(s_x), self.avg)
        assert x.shape[-1] == inst
        with torch.no_grad():
            cls, loc = self.model.track(self.zf, x)
        score = torch.softmax(cls.permute(1, 2, 3, 0).contiguous().view(2, -1).permute(1, 0), dim=1)[:, 1].numpy()
        d = loc.permute(1, 2, 3, 0).contiguous().view(4, -1).numpy().copy()
        d[0] = d[0] * anchors[:, 2] + anchors[:, 0]
        d[1] = d[1] * anchors[:, 3] + anchors[:, 1]
        d[2] = np.exp(d[2]) * anchors[:, 2]
        d[3] = np.exp(d[3]) * anchors[:, 3]

        def change(r):
            return np.maximum(r, 1.0 / r)

        def sz(w, h):
            pad = (w + h) * 0.5
            return np.sqrt((w + pad) * (h + pad))

        s_c = change(sz(d[2], d[3]) / sz(self.size[0] * scale_z, self.size[1] * scale_z))
        r_c = change((self.size[0] / self.size[1]) / (d[2] / d[3]))
        penalty = np.exp(-(r_c * s_c - 1) * p.penalty_k)
        pscore = penalty * score
        wi = 0.001 if self.longterm else p.window_influence
        pscore = pscore * (1 - wi) + window * wi
        best = int(np.argmax(pscore))
        bbox = d[:, best] / scale_z
        lr = penalty[best] * score[best] * p.lr
        best_score = score[best]
        if best_score >= p.confidence_low:
            cx, cy = bbox[0] + self.center[0], bbox[1] + self.center[1]
            width = self.size[0] * (1 - lr) + bbox[2] * lr
            height = self.size[1] * (1 - lr) + bbox[3] * lr
        else:
            cx, cy = self.center
            width, height = self.size
        self.center, self.size = np.array([cx, cy]), np.array([width, height])
        hh, ww = img.shape[:2]
        cx, cy = max(0, min(cx, ww)), max(0, min(cy, hh))
        width, height = max(10, min(width, ww)), max(10, min(height, hh))
        if best_score < p.confidence_low:
            self.longterm = True
        elif best_score > p.confidence_high:
            self.longterm = False
        return [cx - width / 2, cy - height / 2, width, height], float(best_score), inst


def test_config_selects_long_term_and_lost_mode_numbers_follow_spec():
    p = TrackParams.from_config(load_siamrpn_config("siamrpn_r50_l234_dwxcorr_lt"))
    assert p.long_term and (p.confidence_low, p.confidence_high, p.lost_instance_size) == (0.8, 0.998, 831)
    assert (p.score_size, p.score_size_for(831)) == (25, 97)                    # spec §3.2, §3.8
    assert p.mode(True) == (831, 0.001) and p.mode(False) == (255, 0.28)
    assert not TrackParams.from_config(load_siamrpn_config("siamrpn_r50_l234_dwxcorr")).long_term
    # the tracker's lost-mode grid: S = 97, origin -(97 // 2) * 8 = -384 crop pixels, A = 5
    tracker = BatchedSiamRPNTracker(build_siamrpn("siamrpn_alex_tiny"), p)
    anchors, window = tracker.grid(831)
    assert anchors.shape == (5 * 97 * 97, 4) and window.shape == (5 * 97 * 97,)
    assert anchors[:, 0].min() == -384 and anchors[:, 0].max() == 384
    assert anchors[:97 * 97, 2:].unique(dim=0).tolist() == [[104, 32]]
    assert window.max() == pytest.approx(1.0) and window[0] == 0.0


def test_long_term_update_keeps_unconfident_boxes_and_clips_only_the_report():
    """§3.8 on two targets near the right border of a 100 x 200 image: the confident one moves out
    (state unclipped, report clipped), the other keeps its box; numbers written out by hand."""
    p = TrackParams(confidence_low=0.8, lr=0.5)
    center = torch.tensor([[190.0, 50.0], [190.0, 50.0]], dtype=torch.float64)
    size = torch.tensor([[40.0, 30.0], [40.0, 30.0]], dtype=torch.float64)
    scale_z = 2.0
    pred = torch.tensor([[40.0, 0.0, 100.0, 60.0]] * 2).reshape(2, 4, 1)     # crop pixels
    props = Proposals(score=torch.tensor([[0.9], [0.5]]), pred=pred, penalty=torch.ones(2, 1, dtype=torch.float64),
                      best=torch.zeros(2, dtype=torch.long), scale_z=torch.full((2,), scale_z, dtype=torch.float64))
    c, s, bc, bs = update_state_long_term(center, size, props, p, (100, 200))
    lr = 0.9 * 0.5
    want_c0 = [190 + 40 / scale_z, 50.0]
    want_s0 = [40 * (1 - lr) + 50 * lr, 30 * (1 - lr) + 30 * lr]
    np.testing.assert_allclose(c.numpy(), [want_c0, [190, 50]], rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), [want_s0, [40, 30]], rtol=1e-6)
    np.testing.assert_allclose(bc.numpy(), [[200, 50], [190, 50]], rtol=1e-6)   # report clipped to W
    np.testing.assert_allclose(bs.numpy(), [want_s0, [40, 30]], rtol=1e-6)


def test_lost_flags_have_hysteresis():
    p = TrackParams(confidence_low=0.8, confidence_high=0.998)
    lost = torch.tensor([False, False, True, True, True, False])
    score = torch.tensor([0.5, 0.9, 0.9, 0.999, 0.7, 0.999])
    assert next_lost(lost, score, p).tolist() == [True, False, True, False, True, False]


def test_mixed_modes_in_one_batch_equal_the_single_target_transcription(tiny):
    """Some targets lost (831-like wide crops, window 0.001), others not, in one batch: every
    target's box, score and search size equal the literal single-target procedure."""
    frames, boxes = video(0)
    # thresholds inside the score range of this video (quantiles of the short-term best scores,
    # so they follow the weights), so targets switch modes
    short = BatchedSiamRPNTracker(tiny, TrackParams.from_config(tiny.cfg, window_influence=0.15, lr=0.02))
    short.add(frames[0], boxes)
    scores = np.concatenate([short.track(img).best_score.numpy() for img in frames[1:]])
    exercised = []
    for q_low, q_high in ((0.3, 0.6), (0.5, 0.8), (0.2, 0.9)):
        p = TrackParams.from_config(tiny.cfg, long_term=True, lost_instance_size=383, window_influence=0.15,
                                    lr=0.02, confidence_low=float(np.quantile(scores, q_low)),
                                    confidence_high=float(np.quantile(scores, q_high)))
        refs = []
        for b in boxes:
            r = ReferenceLT(tiny, p)
            r.init(frames[0], b.tolist())
            refs.append(r)
        tracker = BatchedSiamRPNTracker(tiny, p)
        tracker.add(frames[0], boxes)
        modes = set()
        for img in frames[1:]:
            lost_before = tracker.state.lost.clone()
            out = tracker.track(img)
            for i, r in enumerate(refs):
                bbox, score, inst = r.track(img)
                assert (inst == 383) == bool(lost_before[i])
                modes.add(bool(lost_before[i]))
                # float32 tolerance: batched and single-sample convolutions round differently
                np.testing.assert_allclose(out.bbox[i].numpy(), bbox, atol=1e-4, rtol=0)
                assert abs(float(out.best_score[i]) - score) <= 1e-5
                np.testing.assert_allclose(tracker.state.center[i].numpy(), r.center, atol=1e-4, rtol=0)
                assert bool(tracker.state.lost[i]) == r.longterm
            if lost_before.any() and not lost_before.all():
                modes.add("mixed")
        exercised.append(modes == {True, False, "mixed"})
    assert any(exercised)      # the video exercised both modes in one batch


def test_long_term_path_equals_short_term_path_while_confident(tiny):
    """confidence_low 0: never lost, every box updated; the boxes here never reach the image
    border, so the unclipped LT state equals the clipped ST state and the runs coincide."""
    frames, boxes = video(1)
    st = BatchedSiamRPNTracker(tiny, TrackParams.from_config(tiny.cfg))
    lt = BatchedSiamRPNTracker(tiny, TrackParams.from_config(tiny.cfg, long_term=True, confidence_low=0.0))
    st.add(frames[0], boxes[:4])              # the 5th box leaves the image: clipping differs
    lt.add(frames[0], boxes[:4])
    h, w = frames.shape[1:3]
    for img in frames[1:]:
        a, b = st.track(img), lt.track(img)
        torch.testing.assert_close(b.bbox, a.bbox, atol=0, rtol=0)
        torch.testing.assert_close(b.best_score, a.best_score, atol=0, rtol=0)
        assert not lt.state.lost.any()
        c, s = lt.state.center, lt.state.size          # premise: nothing was clipped
        assert (c > 0).all() and (c[:, 0] < w).all() and (c[:, 1] < h).all() and (s > 10).all()


def test_single_target_api_and_reinit_reset_lost_state(tiny):
    frames, boxes = video(2)
    p = TrackParams.from_config(tiny.cfg, long_term=True, lost_instance_size=383, confidence_low=1.01)
    single = SiamRPNTracker(tiny, p)
    single.init(frames[0], boxes[0].tolist())
    out = single.track(frames[1])
    assert single.batched.state.lost.tolist() == [True]      # below confidence_low: lost, box kept
    np.testing.assert_allclose(out["bbox"][2:], boxes[0, 2:])
    batched = BatchedSiamRPNTracker(tiny, p)
    batched.add(frames[0], boxes)
    batched.track(frames[1])
    batched.reinit(frames[1], [1, 3], boxes[[1, 3]])
    assert batched.state.lost.tolist() == [True, False, True, False, True]
    batched.remove([0])
    assert batched.state.lost.tolist() == [False, True, False, True] and math.isfinite(batched.track(frames[2]).bbox.sum())
