"""Tracktor (trackers/tracktor): the tracker's life cycle on a controlled regressor (births, deaths,
NMS between tracks, re-identification within patience, camera-motion compensation), the RoI-head
regression with the shipped detector, and a random-init torchvision R50-FPN end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepmot.boxes import box_iou
from trackers.tracktor.cmc import ecc_warp, warp_boxes
from trackers.tracktor.config import TracktorConfig
from trackers.tracktor.model import FrameFeatures, RoIOutput, load_tracktor_net
from trackers.tracktor.tracker import TracktorTracker

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "trackers" / "detection" / "weights" / "detector_tiny_synthetic.pth"
pytestmark = pytest.mark.usefixtures("one_thread")


class FakeNet:
    """A regressor under the test's control: boxes come back where they went in (plus ``shift``),
    scored by ``score(box)``; the appearance of a box is ``look(box)``, a unit vector."""

    device = torch.device("cpu")
    reid_head = None

    def __init__(self, score=lambda b: 0.9, look=lambda b: torch.tensor([1.0, 0.0]), shift=(0.0, 0.0)):
        self.score, self.look, self.shift = score, look, torch.tensor([*shift, *shift])

    def rep_dim(self) -> int:
        return 2

    def _pooled_dim(self) -> int:
        return 2

    def frame(self, image):
        return FrameFeatures({}, None, image.shape[:2], cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))

    def regress(self, ff, boxes):
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) + self.shift
        scores = torch.tensor([float(self.score(b)) for b in boxes])
        rep = torch.stack([self.look(b) for b in boxes]) if len(boxes) else torch.zeros(0, 2)
        return RoIOutput(boxes, scores, rep, rep)

    def detect(self, ff):
        return torch.zeros(0, 4), torch.zeros(0)

    def embed(self, out, kind="box_head"):
        return torch.nn.functional.normalize(out.rep, dim=-1)


IMG = np.zeros((200, 300, 3), np.uint8)
A = [10.0, 10.0, 40.0, 90.0]
B = [150.0, 20.0, 180.0, 100.0]
NOCMC = dict(cmc=False)


def _run(tracker, frames):
    """``frames``: list of public detection lists; returns {frame: {id: box}} of what was written."""
    for i, dets in enumerate(frames, start=1):
        d = torch.tensor(dets, dtype=torch.float32).reshape(-1, 4)
        tracker.step(IMG, d, torch.ones(len(d)), i)
    f, ids, xywh, _ = tracker.results()
    out: dict[int, dict[int, list[float]]] = {}
    for fr, i, b in zip(f, ids, xywh):
        out.setdefault(int(fr), {})[int(i)] = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    return out


def test_births_from_detections_not_covered_by_a_track():
    t = TracktorTracker(FakeNet(), TracktorConfig(**NOCMC))
    out = _run(t, [[A], [A, B], [A, B]])
    assert sorted(out[1]) == [1]
    assert sorted(out[2]) == [1, 2]            # A is covered by track 1: no second track on it
    assert sorted(out[3]) == [1, 2]
    assert np.allclose(out[3][2], B)


def test_cover_iou_decides_which_detections_a_track_covers():
    # a neighbour of A overlapping its track at IoU 3/7: covered at Tracktor's det_nms 0.3, a new
    # track with cover_iou 0.5; the detections' own NMS (det_nms) is not affected by cover_iou
    near = [22.0, 10.0, 52.0, 90.0]
    assert float(box_iou(torch.tensor([A]), torch.tensor([near]))) == pytest.approx(3 / 7)
    out = _run(TracktorTracker(FakeNet(), TracktorConfig(**NOCMC)), [[A], [near]])
    assert sorted(out[2]) == [1]
    out = _run(TracktorTracker(FakeNet(), TracktorConfig(cover_iou=0.5, **NOCMC)), [[A], [near]])
    assert sorted(out[2]) == [1, 2] and np.allclose(out[2][2], near)
    out = _run(TracktorTracker(FakeNet(), TracktorConfig(cover_iou=0.5, **NOCMC)), [[A, near]])
    assert sorted(out[1]) == [1]               # first frame: no track yet, det_nms 0.3 keeps one of the two


def test_weak_detections_are_not_born():
    net = FakeNet(score=lambda b: 0.3 if b[0] > 100 else 0.9)
    out = _run(TracktorTracker(net, TracktorConfig(**NOCMC)), [[A, B]])
    assert sorted(out[1]) == [1] and np.allclose(out[1][1], A)


def test_death_when_the_regression_score_drops_and_after_patience():
    alive = {"on": True}
    net = FakeNet(score=lambda b: 0.9 if alive["on"] else 0.1)
    t = TracktorTracker(net, TracktorConfig(patience=2, reid=True, **NOCMC))
    _run(t, [[A]])
    alive["on"] = False
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 2)
    assert len(t.active) == 0 and t.inactive.ids.tolist() == [1]       # inactive, kept at its box
    assert torch.allclose(t.inactive.pos[0], torch.tensor(A))
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 3)
    assert t.inactive.ids.tolist() == [1]
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 4)                  # 3 frames inactive > patience 2
    assert len(t.inactive) == 0
    f, ids, _, _ = t.results()
    assert f.tolist() == [1] and ids.tolist() == [1]


def test_nms_between_tracks_keeps_the_higher_score():
    # track 2 jumps onto track 1 (IoU 0.875 > reg_nms 0.6): the one scoring higher survives
    a2 = [12.0, 10.0, 42.0, 90.0]
    for better, worse in ((1, 2), (2, 1)):
        t = TracktorTracker(FakeNet(), TracktorConfig(**NOCMC))
        _run(t, [[A, B]])
        t.net = FakeNet(score=lambda b: 0.95 if (b[0] < 11) == (better == 1) else 0.7)
        t.active.pos[1] = torch.tensor(a2)
        t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 2)
        assert t.active.ids.tolist() == [better]
        assert t.inactive.ids.tolist() == [worse]
    # below reg_nms both live
    t = TracktorTracker(FakeNet(), TracktorConfig(**NOCMC))
    _run(t, [[A, B], [A, B]])
    assert sorted(t.active.ids.tolist()) == [1, 2]


def test_reid_within_patience_same_look_keeps_the_id():
    alive = {"on": True}
    net = FakeNet(score=lambda b: 0.9 if alive["on"] or b[0] > 100 else 0.1)
    t = TracktorTracker(net, TracktorConfig(patience=5, **NOCMC))
    _run(t, [[A, B]])
    alive["on"] = False                                   # track 1 (at A) is lost...
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 2)
    alive["on"] = True
    t.step(IMG, torch.tensor([B]), torch.ones(1), 3)
    near_a = [14.0, 12.0, 44.0, 92.0]                     # ...and detected again nearby
    t.step(IMG, torch.tensor([near_a, B]), torch.ones(2), 4)
    assert sorted(t.active.ids.tolist()) == [1, 2]
    assert t.next_id == 3                                 # nobody new was born


def test_no_reid_with_another_look_or_after_patience():
    alive = {"on": True}
    look = {"v": torch.tensor([1.0, 0.0])}
    net = FakeNet(score=lambda b: 0.9 if alive["on"] else 0.1, look=lambda b: look["v"])
    t = TracktorTracker(net, TracktorConfig(patience=5, **NOCMC))
    _run(t, [[A]])
    alive["on"] = False
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 2)
    alive["on"], look["v"] = True, torch.tensor([0.0, 1.0])    # cos 0 -> distance 0.5 > 0.11698
    t.step(IMG, torch.tensor([A]), torch.ones(1), 3)
    assert t.active.ids.tolist() == [2] and t.inactive.ids.tolist() == [1]

    t = TracktorTracker(FakeNet(score=lambda b: 0.9 if alive["on"] else 0.1), TracktorConfig(patience=1, **NOCMC))
    _run(t, [[A]])
    alive["on"] = False
    for f in (2, 3, 4):
        t.step(IMG, torch.zeros(0, 4), torch.zeros(0), f)
    alive["on"] = True
    t.step(IMG, torch.tensor([A]), torch.ones(1), 5)       # same look, but patience is over
    assert t.active.ids.tolist() == [2]


def _texture(h=180, w=320, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w), dtype=np.uint8), (0, 0), 3)
    return cv2.cvtColor(cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX), cv2.COLOR_GRAY2BGR)


def test_ecc_recovers_a_camera_shift_and_moves_boxes():
    img = _texture()
    dx, dy = 6.0, -4.0
    shifted = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (img.shape[1], img.shape[0]),
                             borderMode=cv2.BORDER_REFLECT)
    g0, g1 = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (img, shifted))
    w = ecc_warp(g0, g1)
    assert np.allclose(w[:, 2], [dx, dy], atol=0.3) and np.allclose(w[:, :2], np.eye(2), atol=0.01)
    half = ecc_warp(g0, g1, scale=0.5)
    assert np.allclose(half[:, 2], [dx, dy], atol=0.6)
    moved = warp_boxes(torch.tensor([A]), w)
    assert torch.allclose(moved, torch.tensor([A]) + torch.tensor([dx, dy, dx, dy]), atol=0.3)
    # in the tracker: the box follows the camera before regression (the fake regressor keeps it)
    t = TracktorTracker(FakeNet(), TracktorConfig(cmc=True))
    t.step(img, torch.tensor([A]), torch.ones(1), 1)
    t.step(shifted, torch.zeros(0, 4), torch.zeros(0), 2)
    assert torch.allclose(t.active.pos[0], torch.tensor(A) + torch.tensor([dx, dy, dx, dy]), atol=0.3)
    # without CMC it stays
    t = TracktorTracker(FakeNet(), TracktorConfig(cmc=False))
    t.step(img, torch.tensor([A]), torch.ones(1), 1)
    t.step(shifted, torch.zeros(0, 4), torch.zeros(0), 2)
    assert torch.allclose(t.active.pos[0], torch.tensor(A))


def test_constant_velocity_motion_model():
    t = TracktorTracker(FakeNet(), TracktorConfig(motion=True, motion_steps=2, **NOCMC))
    _run(t, [[A]])
    for f in (2, 3):                        # the target moves 5 px right per frame; the regressor finds it
        t.net = FakeNet(shift=(5.0 * (f - 1), 0.0))
        t.net.regress = lambda ff, boxes, net=t.net: FakeNet.regress(net, ff, torch.tensor([A]).expand(len(boxes), 4))
        t.step(IMG, torch.zeros(0, 4), torch.zeros(0), f)
    assert torch.allclose(t.active.pos[0], torch.tensor(A) + torch.tensor([10.0, 0, 10.0, 0]))
    t.net = FakeNet()                       # the regressor stops moving boxes: the motion model carries on
    t.step(IMG, torch.zeros(0, 4), torch.zeros(0), 4)
    assert torch.allclose(t.active.pos[0], torch.tensor(A) + torch.tensor([15.0, 0, 15.0, 0]))


@pytest.fixture(scope="module")
def synthetic_seq(tmp_path_factory):
    from deepmot.datasets import Sequence
    from deepmot.datasets.mot import discover_sequences
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("tracktor_data")
    generate_synthetic(root, SyntheticConfig(num_train=0, num_test=1, num_val=0, min_frames=6, max_frames=6,
                                             min_objects=5, max_objects=6))
    info = [s for s in discover_sequences(root, "test") if s.name.endswith("SDP")][0]
    seq = Sequence(info)
    seq.data_root = root
    return seq


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights absent")
def test_shipped_detector_keeps_gt_boxes_on_a_still_frame(synthetic_seq):
    net = load_tracktor_net(SHIPPED)
    fr = synthetic_seq[0]
    keep = fr.scored_gt_mask(0.5)
    gt = fr.gt_boxes[keep]
    assert len(gt) >= 3
    with torch.no_grad():
        out = net.regress(net.frame(fr.image), gt)
    iou = box_iou(out.boxes, gt.float()).diagonal()
    assert float(iou.median()) > 0.9 and float((iou > 0.8).float().mean()) >= 0.8
    assert float(out.scores.median()) > 0.5


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights absent")
def test_public_and_private_modes_track_a_sequence(synthetic_seq):
    from deepmot.engine.inference import run_inference
    from trackers.tracktor.tracker import tracktor_factory

    net = load_tracktor_net(SHIPPED)
    for mode in ("public", "private"):
        tr = tracktor_factory(net, TracktorConfig(detections=mode))(synthetic_seq.info)
        for i in range(len(synthetic_seq)):
            fr = synthetic_seq[i]
            tr.step(fr.image, fr.det_boxes, fr.det_scores, fr.index)
        f, ids, xywh, _ = tr.results()
        assert len(f) >= 3 * len(synthetic_seq), mode           # several targets followed each frame
        per_frame = [len(set(ids[f == k].tolist())) for k in np.unique(f)]
        assert all(n == c for n, c in zip(per_frame, np.bincount(f)[np.unique(f)]))   # no id twice per frame
        assert (xywh[:, 2:] > 0).all()


def test_random_init_torchvision_r50_fpn_runs_end_to_end(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    path = tmp_path / "r50.pth"
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2).state_dict(), path)
    net = load_tracktor_net(path)
    assert net.detector.cfg.layout == "resnet50_fpn" and net.rep_dim() == 1024
    net.detector.transform.min_size, net.detector.transform.max_size = (128,), 192   # keep the test fast
    # random weights score near 0.5: accept every box so that tracks live through the frames
    cfg = TracktorConfig(det_thresh=0.0, reg_thresh=0.0, cmc=True)
    for mode in ("public", "private"):
        t = TracktorTracker(net, TracktorConfig(**{**cfg.__dict__, "detections": mode}))
        img = _texture(120, 160)
        for f in (1, 2, 3):
            t.step(img, torch.tensor([[20.0, 20.0, 50.0, 100.0], [90.0, 10.0, 130.0, 110.0]]), torch.ones(2), f)
        frames, ids, xywh, scores = t.results()
        assert np.isfinite(xywh).all() and np.isfinite(scores).all()
        if mode == "public":
            assert set(frames.tolist()) == {1, 2, 3} and len(set(ids.tolist())) >= 2


def test_bad_weights_and_config_end_in_one_line(tmp_path):
    from deepmot.config import ConfigError, load_config
    from deepmot.errors import DataFormatError
    from trackers.multi_config import InferenceFileConfig

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataFormatError, match="bad.pth"):
        load_tracktor_net(bad)
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(DataFormatError, match="do not fit"):
        load_tracktor_net(tmp_path / "foreign.pth")
    with pytest.raises(ConfigError, match="tracktor.detections"):
        load_config(InferenceFileConfig, None, ["tracktor.detections=both"])
    with pytest.raises(ConfigError, match="det_thresh"):
        load_config(InferenceFileConfig, None, ["tracktor.det_thresh=1.5"])
    with pytest.raises(ValueError, match="BGR"):
        load_tracktor_net(SHIPPED).frame(np.zeros((10, 10), np.uint8))


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights absent")
def test_evaluate_cli_runs_tracktor_and_refuses_private_for_siamrpn(synthetic_seq, tmp_path, capsys):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("evaluate_entry_tt", REPO / "evaluate.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    root = str(synthetic_seq.data_root)
    out = tmp_path / "out"
    rc = ev.main(["--tracker", "tracktor", "--data", root, "--split", "test", "--detections", "private",
                  "--seqs", synthetic_seq.name, "--out", str(out), "--no-hota"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / f"{synthetic_seq.name}.txt").is_file() and "tracker_speed" in summary
    assert "tracktor (private detections" in capsys.readouterr().out
    rc = ev.main(["--tracker", "siamrpn", "--data", root, "--split", "test", "--detections", "private",
                  "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "birth source" in err
