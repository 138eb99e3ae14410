"""SiamRPN SOT inference against PySOT's own runs and a literal transcription of PySOT's crop
procedure (spec pysot.md §3).

The tracking procedure (crops, anchors, window, post-processing, state updates) is compared with
PySOT's ``siamrpn_alex_dwxcorr`` run given PySOT's own network outputs (``pysot_run``, in the
repository); our network inside our tracker is compared with PySOT's whole runs with weights
(``pysot_ref``: the tiny SiamRPN in the repository, the full-size one in CI's ``../shared``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trackers.siamrpn.anchors import anchor_grid, anchor_shapes, cosine_window, grid_origin
from trackers.siamrpn.crop import channel_average, crop_batch, get_subwindow
from trackers.siamrpn.tracker import SiamRPNTracker, TrackParams, propose, \
    update_state

ALEX = TrackParams(instance_size=287, base_size=0, penalty_k=0.16, window_influence=0.40, lr=0.30)


pytestmark = pytest.mark.usefixtures("one_thread")


def pysot_subwindow_reference(im, pos, model_sz, original_sz, avg_chans):
    """Spec §3.4 step by step: pad the whole image, slice, resize (the slow reference)."""
    import cv2
    sz = original_sz
    c = (original_sz + 1) / 2
    xmin = math.floor(pos[0] - c + 0.5)
    ymin = math.floor(pos[1] - c + 0.5)
    xmax, ymax = xmin + sz - 1, ymin + sz - 1
    r, cc, _ = im.shape
    left, top = int(max(0, -xmin)), int(max(0, -ymin))
    right, bottom = int(max(0, xmax - cc + 1)), int(max(0, ymax - r + 1))
    if any([left, top, right, bottom]):
        canvas = np.zeros((r + top + bottom, cc + left + right, 3), np.uint8)
        canvas[top:top + r, left:left + cc] = im
        if top:
            canvas[:top, left:left + cc] = avg_chans
        if bottom:
            canvas[r + top:, left:left + cc] = avg_chans
        if left:
            canvas[:, :left] = avg_chans
        if right:
            canvas[:, cc + left:] = avg_chans
        patch = canvas[ymin + top:ymax + top + 1, xmin + left:xmax + left + 1]
    else:
        patch = im[ymin:ymax + 1, xmin:xmax + 1]
    if model_sz != original_sz:
        patch = cv2.resize(patch, (model_sz, model_sz))
    return torch.from_numpy(patch.transpose(2, 0, 1)[None].astype(np.float32))


# ----------------------------------------------------------------------------- anchors
def test_anchor_shapes_and_origins_match_spec():
    got = anchor_shapes(8, [0.33, 0.5, 1, 2, 3], [8])
    assert got.tolist() == [[104, 32], [88, 40], [64, 64], [40, 80], [32, 96]]
    assert grid_origin(25, 8) == -96 and grid_origin(21, 8) == -80
    assert grid_origin(19, 8, "dasiamrpn") == -76      # DeepMOT under Python 3 (§9.4)
    with pytest.raises(ValueError):
        grid_origin(19, 8, "other")  # type: ignore[arg-type]


def test_anchor_grid_and_window_equal_pysot(pysot_run):
    anchors = anchor_grid(21, 8, ALEX.ratios, ALEX.scales)
    np.testing.assert_array_equal(anchors, pysot_run.anchors.numpy())
    np.testing.assert_array_equal(cosine_window(21, 5), pysot_run.window.numpy())
    # dasiamrpn grid: the same anchors shifted by half a stride up-left
    shifted = anchor_grid(21, 8, ALEX.ratios, ALEX.scales, "dasiamrpn")
    np.testing.assert_array_equal(shifted[:, :2], anchors[:, :2] - 4)


# ----------------------------------------------------------------------------- crops
def test_crops_equal_pysot_crops(pysot_run):
    """Every get_subwindow call of PySOT's run (template, then search crops that leave the image)."""
    assert len(pysot_run.crops) == 5
    for i, (crop, args) in enumerate(zip(pysot_run.crops, pysot_run.crop_args)):
        got = get_subwindow(pysot_run.frames[i], args["pos"], args["model_sz"], args["original_sz"],
                            args["avg_chans"])
        assert got.shape == crop.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, crop, atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(cx=st.floats(-150, 250), cy=st.floats(-150, 200), sz=st.integers(1, 260),
       model_sz=st.sampled_from([31, 64, 127]), avg=st.tuples(*[st.floats(0, 255)] * 3))
def test_crop_equals_padded_reference_anywhere(cx, cy, sz, model_sz, avg):
    rng = np.random.default_rng(abs(int(cx * 7 + cy * 13 + sz)))
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    ref = pysot_subwindow_reference(img, (cx, cy), model_sz, sz, avg)
    got = get_subwindow(img, (cx, cy), model_sz, sz, avg)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)


def test_channel_average_is_numpy_mean_bit_for_bit(pysot_run):
    rng = np.random.default_rng(5)
    images = list(pysot_run.frames) + [rng.integers(0, 256, (int(rng.integers(1, 200)), int(rng.integers(1, 200)), 3),
                                                dtype=np.uint8) for _ in range(10)]
    for img in images:
        np.testing.assert_array_equal(channel_average(img), img.mean(axis=(0, 1)))
    # PySOT's padding colour of its frame 0 (the rebuilt frame keeps its pixel sums)
    np.testing.assert_array_equal(channel_average(pysot_run.full_frame(0)),
                                  pysot_run.ref["frames"][0]["channel_average"])


def test_crop_batch_rows_equal_single_crops_and_bad_input_raises():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    pos = rng.uniform(-20, 150, (6, 2))
    sizes = rng.integers(20, 120, 6)
    avg = rng.uniform(0, 255, (6, 3))
    batch = crop_batch(img, pos, 63, sizes, avg)
    for i in range(6):
        torch.testing.assert_close(batch[i:i + 1], pysot_subwindow_reference(img, pos[i], 63, int(sizes[i]), avg[i]))
    with pytest.raises(ValueError, match="uint8"):
        crop_batch(img.astype(np.float32), pos, 63, sizes, avg)
    with pytest.raises(ValueError, match="must match"):
        crop_batch(img, pos, 63, sizes[:3], avg)


# ----------------------------------------------------------------------------- tracker
def _check_against_reference(frame_ref, bbox, score):
    np.testing.assert_allclose(np.asarray(bbox), frame_ref["bbox"], atol=1e-3, rtol=0)
    assert abs(score - frame_ref["best_score"]) <= 1e-5


def _replay_postprocessing(run, params: TrackParams, hw) -> None:
    """Feed a PySOT run's recorded ``cls``/``loc`` (frame t at t - 1) to our post-processing from its
    init state, with ``params`` on an ``hw`` image: every frame's box, score and state are PySOT's."""
    ref = run.ref["frames"]
    center = torch.tensor([ref[0]["center_pos"]], dtype=torch.float64)
    size = torch.tensor([ref[0]["size"]], dtype=torch.float64)
    for t in range(1, len(ref)):
        props = propose(run.cls[t - 1], run.loc[t - 1], size, run.anchors, run.window, params)
        center, size = update_state(center, size, props, params, hw)
        _check_against_reference(ref[t], torch.cat([center - size / 2, size], 1)[0], float(props.best_score()[0]))
        np.testing.assert_allclose(center[0], ref[t]["center_pos"], atol=1e-3, rtol=0)
        np.testing.assert_allclose(size[0], ref[t]["size"], atol=1e-3, rtol=0)


def test_postprocessing_of_stored_outputs_matches_pysot(pysot_run):
    """Feed PySOT's stored cls/loc to our post-processing: boxes, scores, states as PySOT's."""
    assert len(pysot_run.ref["frames"]) == 5
    _replay_postprocessing(pysot_run, ALEX, pysot_run.frame_shape[:2])


def test_tracker_on_pysot_network_outputs_matches_pysot(pysot_run):
    """The whole SiamRPNTracker (init, crops, post-processing, state) with PySOT's recorded network:
    it is fed PySOT's crops (the stand-in fails on any other input) and gives PySOT's run."""
    tracker = SiamRPNTracker(pysot_run.network(), ALEX)
    tracker.init(pysot_run.full_frame(0), pysot_run.init_box.tolist())
    ref = pysot_run.ref["frames"]
    np.testing.assert_allclose(tracker.center_pos, ref[0]["center_pos"])
    np.testing.assert_allclose(tracker.size, ref[0]["size"])
    np.testing.assert_array_equal(tracker.batched.state.channel_average[0], ref[0]["channel_average"])
    torch.testing.assert_close(tracker.batched.state.templates, pysot_run.crops[0], atol=1e-6, rtol=0)
    for t in range(1, 5):
        out = tracker.track(pysot_run.full_frame(t))
        _check_against_reference(ref[t], out["bbox"], out["best_score"])
        np.testing.assert_allclose(tracker.center_pos, ref[t]["center_pos"], atol=1e-3, rtol=0)
        np.testing.assert_allclose(tracker.size, ref[t]["size"], atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- whole PySOT runs with weights
def test_reference_crops_equal_pysot_crops(pysot_ref):
    """Every get_subwindow call of the reference run, rebuilt from its frames (the tiny run's
    search windows leave its 256x192 frames: padding), equals PySOT's crop exactly."""
    assert len(pysot_ref.crops) == len(pysot_ref.frames)
    for c in pysot_ref.crops:
        got = pysot_ref.rebuild_crop(c)       # asserts equality with PySOT's pixels / their hash
        assert got.shape == (1, 3, c["model_sz"], c["model_sz"])
    assert any(_leaves_image(c, pysot_ref.frames.shape[1:3]) for c in pysot_ref.crops[1:])


def _leaves_image(c: dict, hw) -> bool:
    """Whether PySOT's crop window of ``c`` reaches outside an image of height, width ``hw``."""
    sz = c["original_sz"]
    lo = [math.floor(v - (sz + 1) / 2 + 0.5) for v in c["pos"]]
    return min(lo) < 0 or lo[0] + sz > hw[1] or lo[1] + sz > hw[0]


def test_anchor_grid_and_window_equal_pysot_at_reference_size(pysot_ref):
    """Anchors and cosine window at the run's score size (21 for 287-px crops, 9 for 191-px ones)."""
    p = TrackParams(**pysot_ref.track_values())
    s = p.score_size
    assert s * s * p.anchor_num == pysot_ref.anchors.shape[0] == pysot_ref.window.shape[0]
    np.testing.assert_array_equal(anchor_grid(s, p.stride, p.ratios, p.scales), pysot_ref.anchors.numpy())
    np.testing.assert_array_equal(cosine_window(s, p.anchor_num), pysot_ref.window.numpy())


def test_postprocessing_of_reference_outputs_matches_pysot(pysot_ref):
    """PySOT's recorded cls/loc through our post-processing with the run's values: PySOT's states."""
    assert len(pysot_ref.ref["frames"]) == len(pysot_ref.frames)
    _replay_postprocessing(pysot_ref, TrackParams(**pysot_ref.track_values()), pysot_ref.frames.shape[1:3])


def test_full_run_with_real_model_matches_pysot(pysot_ref):
    """Our network on PySOT's weights inside our tracker, with the config's tracking values, on the
    reference frames: PySOT's padding colour, states, boxes and scores."""
    tracker = SiamRPNTracker(pysot_ref.model())
    for k, v in pysot_ref.track_values().items():
        assert getattr(tracker.batched.params, k) == v, k
    ref = pysot_ref.ref["frames"]
    tracker.init(pysot_ref.frames[0], pysot_ref.init_box.tolist())
    np.testing.assert_array_equal(tracker.batched.state.channel_average[0], ref[0]["channel_average"])
    np.testing.assert_allclose(tracker.center_pos, ref[0]["center_pos"])
    np.testing.assert_allclose(tracker.size, ref[0]["size"])
    for t in range(1, len(pysot_ref.frames)):
        out = tracker.track(pysot_ref.frames[t])
        _check_against_reference(ref[t], out["bbox"], out["best_score"])
        np.testing.assert_allclose(tracker.center_pos, ref[t]["center_pos"], atol=1e-3, rtol=0)
        np.testing.assert_allclose(tracker.size, ref[t]["size"], atol=1e-3, rtol=0)


def test_track_before_init_and_bad_boxes_raise():
    from trackers.siamrpn import build_siamrpn
    tracker = SiamRPNTracker(build_siamrpn("siamrpn_alex_dwxcorr"))   # untrained: no weights needed
    img = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(RuntimeError, match="before init"):
        tracker.track(img)
    with pytest.raises(ValueError, match="w, h > 0"):
        tracker.init(img, [1, 2, 0, 5])
