"""Batched multi-target tracking gives what N independent single-target trackers give, and
PySOT's single-target run for a target tracked among others (``pysot_ref``: PySOT's runs with
weights; the tiny SiamRPN in the repository, the full-size one in CI's ``../shared``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from trackers.siamrpn.tracker import BatchedSiamRPNTracker, SiamRPNTracker, TrackParams

N_TARGETS = 20
N_FRAMES = 3  # init frame + 2 tracked frames
# per reference: the full-size weights at PySOT's training search size (S = 17), cheaper than 287 on
# a shared CPU; the tiny model at its own 191 (S = 9)
FAST = {"siamrpn_alex_dwxcorr": dict(instance_size=255, base_size=0)}


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_video(seed: int, n_targets: int, n_frames: int, hw=(360, 480)):
    """Random textured background with ``n_targets`` textured rectangles moving at constant speed
    (some leave the image). Returns frames (T, H, W, 3) uint8 and the first-frame boxes (N, 4) xywh."""
    rng = np.random.default_rng(seed)
    h, w = hw
    bg = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    bg = np.clip(bg.astype(np.int16) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    sizes = rng.uniform(16, 90, (n_targets, 2))
    pos = rng.uniform([-10, -10], [w - 30, h - 30], (n_targets, 2))
    vel = rng.uniform(-12, 12, (n_targets, 2))
    textures = [rng.integers(0, 256, (int(s[1]) + 1, int(s[0]) + 1, 3), dtype=np.uint8) for s in sizes]
    frames = []
    for t in range(n_frames):
        img = bg.copy()
        for i in range(n_targets):
            x0, y0 = (pos[i] + t * vel[i]).round().astype(int)
            tex = textures[i]
            ys, xs = slice(max(y0, 0), min(y0 + tex.shape[0], h)), slice(max(x0, 0), min(x0 + tex.shape[1], w))
            if ys.start < ys.stop and xs.start < xs.stop:
                img[ys, xs] = tex[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        frames.append(img)
    return np.stack(frames), np.concatenate([pos, sizes], axis=1)


@pytest.fixture(scope="module")
def model(pysot_ref):
    """Our network on the reference's PySOT weights (``.ref_name`` names the reference)."""
    m = pysot_ref.model()
    m.ref_name = pysot_ref.name
    return m


def fast_params(model, **overrides) -> TrackParams:
    return TrackParams.from_config(model.cfg, **{**FAST.get(model.ref_name, {}), **overrides})


def _single_runs(model, frames, boxes, params=None):
    """Reference: one independent SiamRPNTracker per target. Returns (T-1, N, 4), (T-1, N)."""
    out_b, out_s = [], []
    for box in boxes:
        tr = SiamRPNTracker(model, params)
        tr.init(frames[0], box.tolist())
        res = [tr.track(f) for f in frames[1:]]
        out_b.append([r["bbox"] for r in res])
        out_s.append([r["best_score"] for r in res])
    return np.array(out_b).transpose(1, 0, 2), np.array(out_s).T


@pytest.mark.parametrize("seed", [0])
def test_batched_20_targets_equal_20_single_runs(model, seed):
    frames, boxes = synthetic_video(seed, N_TARGETS, N_FRAMES)
    params = fast_params(model)
    ref_boxes, ref_scores = _single_runs(model, frames, boxes, params)
    tracker = BatchedSiamRPNTracker(model, params)
    ids = tracker.add(frames[0], boxes)
    assert ids == list(range(N_TARGETS))
    for t, f in enumerate(frames[1:]):
        res = tracker.track(f)
        assert res.ids == ids
        np.testing.assert_allclose(res.bbox.numpy(), ref_boxes[t], atol=1e-3, rtol=1e-5)
        np.testing.assert_allclose(res.best_score.numpy(), ref_scores[t], atol=1e-5)
    # the run is not trivial: targets moved and scores vary
    assert np.abs(ref_boxes[-1][:, :2] - boxes[:, :2]).max() > 5


def test_target_among_others_follows_pysot_run(pysot_ref, model):
    """The reference target tracked in one batch with other targets (added before and after it,
    chunked network passes) gets PySOT's single-target boxes and scores on every frame."""
    frames, box = pysot_ref.frames, pysot_ref.init_box
    h, w = frames.shape[1:3]
    others = np.array([box + [0.3 * w, 0.2 * h, 8, -4], box - [0.2 * w, 0.1 * h, 0, 0], [5, 5, 20, 30]])
    tracker = BatchedSiamRPNTracker(model, TrackParams.from_config(model.cfg), max_batch=2)
    tracker.add(frames[0], others[:1], ids=[7])
    tracker.add(frames[0], box[None], ids=[3])
    tracker.add(frames[0], others[1:], ids=[1, 9])
    for t in range(1, len(frames)):
        res = tracker.track(frames[t])
        row = res.ids.index(3)
        ref = pysot_ref.ref["frames"][t]
        np.testing.assert_allclose(res.bbox[row].numpy(), ref["bbox"], atol=1e-3, rtol=0)
        assert abs(float(res.best_score[row]) - ref["best_score"]) <= 1e-5


def test_add_remove_by_id_and_chunking(model):
    """Targets added later / removed midway keep exactly their single-target trajectories; chunked
    network passes (max_batch) change nothing."""
    frames, boxes = synthetic_video(7, 6, 4)
    params = fast_params(model)
    ref_boxes, _ = _single_runs(model, frames[1:], boxes, params)      # all start on frame 1
    tracker = BatchedSiamRPNTracker(model, params, max_batch=4)
    tracker.add(frames[1], boxes[:4], ids=[10, 11, 12, 13])
    tracker.add(frames[1], boxes[4:], ids=[20, 21])
    with pytest.raises(ValueError, match="new and unique"):
        tracker.add(frames[1], boxes[:1], ids=[11])
    r = tracker.track(frames[2])
    np.testing.assert_allclose(r.bbox.numpy(), ref_boxes[0], atol=1e-3, rtol=1e-5)
    tracker.remove([11, 20])
    with pytest.raises(KeyError):
        tracker.remove([11])
    assert tracker.ids == [10, 12, 13, 21]
    r = tracker.track(frames[3])
    np.testing.assert_allclose(r.bbox.numpy(), ref_boxes[1][[0, 2, 3, 5]], atol=1e-3, rtol=1e-5)
    tracker.remove(tracker.ids)
    assert len(tracker) == 0 and tracker.track(frames[3]).bbox.shape == (0, 4)


def test_reinit_resets_target_to_a_fresh_start(model):
    frames, boxes = synthetic_video(11, 3, 3)
    params = fast_params(model)
    tracker = BatchedSiamRPNTracker(model, params)
    tracker.add(frames[0], boxes)
    tracker.track(frames[1])
    tracker.reinit(frames[1], [1], boxes[1:2])
    single = SiamRPNTracker(model, params)
    single.init(frames[1], boxes[1].tolist())
    np.testing.assert_allclose(tracker.track(frames[2]).bbox[1].numpy(), single.track(frames[2])["bbox"],
                               atol=1e-3, rtol=1e-5)


def test_dasiamrpn_flavour_uses_shifted_grid_and_centre(model):
    p = TrackParams.from_config(model.cfg, flavour="dasiamrpn")
    tracker = BatchedSiamRPNTracker(model, p)
    tracker.add(np.zeros((100, 100, 3), np.uint8), [[10, 20, 30, 40]])
    np.testing.assert_allclose(tracker.state.center[0].numpy(), [25.0, 40.0])   # x + w/2
    assert tracker.anchors[0, 0].item() == -(p.score_size / 2) * 8


class TwoLevelToy(torch.nn.Module):
    """A tiny multi-level SiamRPN stand-in (template features are a list, like r50/mobilenet):
    per-level pooled features, per-sample depthwise correlation, 1x1 heads. S = 3 for 143 crops."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(2, 8, 3, 1, 1, generator=g))
        self.cls = torch.nn.Conv2d(8, 10, 1)
        self.loc = torch.nn.Conv2d(8, 20, 1)
        with torch.no_grad():
            self.loc.bias.mul_(0.1)

    def _features(self, img):
        pooled = (torch.nn.functional.avg_pool2d(img, 8) - 128) / 64
        return [torch.nn.functional.conv2d(pooled, self.proj[lvl]) for lvl in range(2)]

    def template(self, z):
        return self._features(z)

    def track(self, zf, x):
        xf = self._features(x)
        b, c = zf[0].shape[:2]
        corr = sum(torch.nn.functional.conv2d(xl.reshape(1, b * c, *xl.shape[2:]),
                                              zl.reshape(b * c, 1, *zl.shape[2:]), groups=b * c)
                   for xl, zl in zip(xf, zf)).reshape(b, c, 3, 3) / 225
        return self.cls(corr), self.loc(corr)


def test_multilevel_features_batched_equal_single():
    toy = TwoLevelToy()
    params = TrackParams(instance_size=143, base_size=0)
    frames, boxes = synthetic_video(21, 5, 4)
    ref_boxes, ref_scores = _single_runs(toy, frames, boxes, params)
    tracker = BatchedSiamRPNTracker(toy, params, max_batch=2)
    tracker.add(frames[0], boxes[:2])
    tracker.add(frames[0], boxes[2:])
    assert isinstance(tracker.state.zf, list) and tracker.state.zf[1].shape[0] == 5
    for t in range(3):
        if t == 1:
            tracker.remove([1])
        res = tracker.track(frames[t + 1])
        keep = [0, 2, 3, 4] if t >= 1 else list(range(5))
        np.testing.assert_allclose(res.bbox.numpy(), ref_boxes[t][keep], atol=1e-3, rtol=1e-6)
        np.testing.assert_allclose(res.best_score.numpy(), ref_scores[t][keep], atol=1e-5)
    assert np.abs(ref_boxes[-1] - ref_boxes[0]).max() > 1e-3    # the toy does move boxes


def test_exploding_regression_raises_clear_error():
    toy = TwoLevelToy()
    with torch.no_grad():
        toy.loc.bias.fill_(200.0)            # exp(dw) overflows float32 -> inf/NaN boxes
    tracker = BatchedSiamRPNTracker(toy, TrackParams(instance_size=143, base_size=0))
    frames, boxes = synthetic_video(3, 2, 2)
    tracker.add(frames[0], boxes, ids=[4, 9])
    with pytest.raises(FloatingPointError, match=r"\[4, 9\]"):
        tracker.track(frames[1])
