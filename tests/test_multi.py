"""MOT logic of ``trackers.multi.MultiTracker`` on hand-built cases with a scripted stub SOT.

Every expected id/box below is derived by hand from the rules in ``MOTConfig``'s docstring (not by
running the code). The stub follows the batched SOT protocol: it keeps one box per id, returns it
unchanged from ``track`` unless the test scripted a position for that id, and logs every call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackers.multi import MultiTracker
from trackers.siamrpn.mot import SiamRPNSOT, siamrpn_mot_factory
from trackers.multi_config import MOTConfig

IMG = np.zeros((100, 200, 3), np.uint8)  # H=100, W=200


pytestmark = pytest.mark.usefixtures("one_thread")


class StubSOT:
    """Deterministic fake batched SOT: ``force[id] = xywh`` sets that target's box in the next ``track``."""

    def __init__(self):
        self.boxes: dict[int, torch.Tensor] = {}
        self.calls: list[tuple] = []
        self.force: dict[int, list[float]] = {}
        self.score = 1.0  # best_score reported for every target
        self.steps = 0

    def add(self, img, boxes_xywh, ids):
        for i, b in zip(ids, boxes_xywh):
            assert i not in self.boxes
            self.boxes[int(i)] = torch.as_tensor(b, dtype=torch.float64).clone()
        self.calls.append(("add", list(ids), torch.as_tensor(boxes_xywh).tolist()))
        return list(ids)

    def remove(self, ids):
        for i in ids:
            del self.boxes[int(i)]
        self.calls.append(("remove", list(ids)))

    def reinit(self, img, ids, boxes_xywh):
        for i, b in zip(ids, boxes_xywh):
            self.boxes[int(i)] = torch.as_tensor(b, dtype=torch.float64).clone()
        self.calls.append(("reinit", list(ids), torch.as_tensor(boxes_xywh).tolist()))

    def move(self, ids, boxes_xywh):
        for i, b in zip(ids, boxes_xywh):
            self.boxes[int(i)] = torch.as_tensor(b, dtype=torch.float64).clone()
        self.calls.append(("move", list(ids), torch.as_tensor(boxes_xywh).tolist()))

    def track(self, img):
        self.steps += 1
        for i, b in self.force.items():
            self.boxes[i] = torch.tensor(b, dtype=torch.float64)
        self.force = {}
        ids = list(self.boxes)

        class Out:
            pass

        out = Out()
        out.ids = ids
        out.bbox = torch.stack([self.boxes[i] for i in ids]) if ids else torch.zeros(0, 4, dtype=torch.float64)
        out.best_score = torch.full((len(ids),), self.score)
        return out


def _cfg(**kw) -> MOTConfig:
    base = dict(min_score=0.0, birth_score=0.5, detector_scores={}, match_iou=0.5, refine_iou=1.5, patience=30,
                nms_iou=0.5, birth_wait=1, birth_iou=0.4, coast_frames=0)
    base.update(kw)
    return MOTConfig(**base)


def _step(mot, frame, dets, scores=None):
    d = torch.tensor(dets, dtype=torch.float32).reshape(-1, 4)
    s = torch.tensor(scores if scores is not None else [0.9] * d.shape[0], dtype=torch.float32)
    return mot.step(IMG, d, s, frame)


def _ids(out):
    return out.ids.tolist()


def test_immediate_births_ids_follow_score_order():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg())
    out = _step(mot, 1, [[10, 10, 20, 30], [50, 10, 60, 30], [100, 10, 110, 30]], [0.6, 0.9, 0.3])
    # det 2 (0.3) is below birth_score; det 1 (0.9) born first -> id 1, det 0 -> id 2
    assert _ids(out) == [1, 2]
    assert out.boxes.tolist() == [[50, 10, 60, 30], [10, 10, 20, 30]]
    assert sot.calls == [("add", [1, 2], [[50, 10, 10, 20], [10, 10, 10, 20]])]


def test_min_score_filter_and_detector_thresholds():
    cfg = _cfg(detector_scores={"DPM": [0.5, 0.7]})
    # DPM: 0.6 passes min_score but not birth_score 0.7 -> no birth; default thresholds: birth
    assert _ids(_step(MultiTracker(StubSOT(), cfg, detector="DPM"), 1, [[10, 10, 20, 30]], [0.6])) == []
    assert _ids(_step(MultiTracker(StubSOT(), cfg, detector="SDP"), 1, [[10, 10, 20, 30]], [0.6])) == [1]
    # an existing track is not kept alive by a detection below min_score
    mot = MultiTracker(StubSOT(), cfg, detector="DPM")
    _step(mot, 1, [[10, 10, 20, 30]], [0.9])
    assert _ids(_step(mot, 2, [[10, 10, 20, 30]], [0.4])) == []
    assert mot.tracks[1].active is False and mot.tracks[1].misses == 1


def test_birth_confirmation_and_backfill():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(birth_wait=3))
    a = [[10, 10, 20, 30], [11, 10, 21, 30], [12, 10, 22, 30], [13, 10, 23, 30]]
    b = [[100, 10, 110, 30], [100, 10, 110, 30]]  # seen twice only -> never born
    assert _ids(_step(mot, 1, [a[0], b[0]])) == []
    assert _ids(_step(mot, 2, [a[1], b[1]])) == []
    out = _step(mot, 3, [a[2]])
    assert _ids(out) == [1] and out.boxes.tolist() == [a[2]]
    assert sot.calls == [("add", [1], [[12, 10, 10, 20]])]
    # next frame: the SOT keeps the box (stub), the detection a[3] matches (IoU 9/11 >= 0.5)
    assert _ids(_step(mot, 4, [a[3]])) == [1]
    frame, ids, xywh, _ = mot.results()
    assert frame.tolist() == [1, 2, 3, 4] and ids.tolist() == [1, 1, 1, 1]
    assert xywh[:3].tolist() == [[10, 10, 10, 20], [11, 10, 10, 20], [12, 10, 10, 20]]
    assert mot.candidates == []


def test_chain_broken_by_low_iou_restarts():
    mot = MultiTracker(StubSOT(), _cfg(birth_wait=2, birth_iou=0.4))
    assert _ids(_step(mot, 1, [[10, 10, 20, 30]])) == []
    # IoU([10,10,20,30],[16,10,26,30]) = 80/320 = 0.25 < 0.4 -> new chain, no birth
    assert _ids(_step(mot, 2, [[16, 10, 26, 30]])) == []
    # IoU with [16,10,26,30] = 1 -> second link -> born
    assert _ids(_step(mot, 3, [[16, 10, 26, 30]])) == [1]


def test_refinement_combines_track_and_detection():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(refine_iou=0.6))
    _step(mot, 1, [[0, 0, 10, 10]])
    # SOT keeps [0,0,10,10]; det [0,0,10,8]: IoU 80/100 = 0.8 >= 0.6 -> 0.2*track + 0.8*det = [0,0,10,8.4]
    out = _step(mot, 2, [[0, 0, 10, 8]], [0.7])
    assert _ids(out) == [1]
    assert out.boxes[0].tolist() == pytest.approx([0, 0, 10, 8.4])
    assert out.scores.tolist() == pytest.approx([0.7])
    assert sot.calls[-1][0:2] == ("move", [1]) and sot.calls[-1][2][0] == pytest.approx([0, 0, 10, 8.4])


def test_no_refinement_below_refine_iou():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(refine_iou=0.9))
    _step(mot, 1, [[0, 0, 10, 10]])
    out = _step(mot, 2, [[0, 0, 10, 8]])  # IoU 0.8 < 0.9: SOT box written, no move
    assert out.boxes.tolist() == [[0, 0, 10, 10]]
    assert [c[0] for c in sot.calls] == ["add"]


def test_inactive_then_death_after_patience():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(patience=2))
    _step(mot, 1, [[10, 10, 20, 30]])
    assert _ids(_step(mot, 2, [])) == [] and mot.tracks[1].misses == 1
    assert _ids(_step(mot, 3, [])) == [] and mot.tracks[1].misses == 2
    assert 1 in sot.boxes  # still tracked by the SOT while inactive
    assert _ids(_step(mot, 4, [])) == []  # third miss > patience 2 -> dies
    assert mot.tracks == {} and sot.calls[-1] == ("remove", [1])
    frame, ids, _, _ = mot.results()
    assert frame.tolist() == [1] and ids.tolist() == [1]


def test_reactivation_reinitialises_from_detection():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(patience=2))
    _step(mot, 1, [[10, 10, 20, 30]])
    _step(mot, 2, [])
    _step(mot, 3, [])
    # IoU([10,10,20,30],[11,10,21,30]) = 9/11 >= 0.5 -> id 1 back, box = the detection, new template
    out = _step(mot, 4, [[11, 10, 21, 30]])
    assert _ids(out) == [1] and out.boxes.tolist() == [[11, 10, 21, 30]]
    assert sot.calls[-1] == ("reinit", [1], [[11, 10, 10, 20]])
    assert mot.tracks[1].misses == 0


def test_active_tracks_get_detections_before_inactive_ones():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(patience=5))
    _step(mot, 1, [[0, 0, 10, 10], [100, 0, 110, 10]], [0.9, 0.8])  # ids 1, 2
    _step(mot, 2, [[0, 0, 10, 10]])  # id 2 unmatched -> inactive
    assert mot.tracks[2].active is False
    # frame 3: the SOT puts id 2 exactly on the detection, id 1 slightly off (IoU 9.5/10.5);
    # the active id 1 still wins the detection, id 2 stays inactive
    sot.force = {2: [0, 0, 10, 10], 1: [0.5, 0, 10, 10]}
    out = _step(mot, 3, [[0, 0, 10, 10]])
    assert _ids(out) == [1]
    assert mot.tracks[2].active is False and mot.tracks[2].misses == 2


def test_duplicate_active_track_suppressed_older_id_wins():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg())
    _step(mot, 1, [[0, 0, 10, 10], [50, 0, 60, 10]], [0.9, 0.8])  # ids 1, 2
    # id 2 drifts next to id 1; both get an exact detection (IoU 1 each), but the two tracks
    # overlap at IoU 90/110 = 0.82 > 0.5 -> the younger id 2 goes inactive; its det starts nothing
    sot.force = {2: [1, 0, 10, 10]}
    out = _step(mot, 2, [[0, 0, 10, 10], [1, 0, 11, 10]])
    assert _ids(out) == [1]
    assert mot.tracks[2].active is False and mot.tracks[2].misses == 1
    assert mot.candidates == [] and len(mot.tracks) == 2


def test_birth_not_on_top_of_active_track():
    mot = MultiTracker(StubSOT(), _cfg())
    _step(mot, 1, [[0, 0, 10, 10]])
    # two detections on the same person: one matches id 1, the duplicate (IoU 0.82 >= match_iou)
    # overlaps the active track and may not start a track
    out = _step(mot, 2, [[0, 0, 10, 10], [1, 0, 11, 10]])
    assert _ids(out) == [1] and list(mot.tracks) == [1]


def test_coasting_writes_sot_box_for_a_few_confident_frames():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(patience=5, coast_frames=2, coast_score=0.5))
    _step(mot, 1, [[10, 10, 20, 30]])
    sot.force = {1: [12, 10, 10, 20]}  # the SOT follows the person while the detector misses it
    out = _step(mot, 2, [])
    assert _ids(out) == [1] and out.boxes.tolist() == [[12, 10, 22, 30]] and mot.tracks[1].active is False
    assert _ids(_step(mot, 3, [])) == [1]  # 2nd miss <= coast_frames
    assert _ids(_step(mot, 4, [])) == []  # 3rd miss: inactive and silent (alive until patience)
    assert 1 in mot.tracks
    # a low SOT score stops coasting at once
    sot2 = StubSOT()
    mot2 = MultiTracker(sot2, _cfg(coast_frames=2, coast_score=0.5))
    _step(mot2, 1, [[10, 10, 20, 30]])
    sot2.score = 0.4
    assert _ids(_step(mot2, 2, [])) == []


def test_coasting_track_hidden_behind_an_active_duplicate():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg(coast_frames=3))
    _step(mot, 1, [[0, 0, 10, 10], [50, 0, 60, 10]], [0.9, 0.8])  # ids 1, 2
    # id 2's detection disappears and its SOT box lands on id 1 (IoU 0.82 > nms_iou): not written
    sot.force = {2: [1, 0, 10, 10]}
    out = _step(mot, 2, [[0, 0, 10, 10]])
    assert _ids(out) == [1] and mot.tracks[2].misses == 1


def test_track_leaving_the_image_dies():
    sot = StubSOT()
    mot = MultiTracker(sot, _cfg())
    _step(mot, 1, [[180, 10, 195, 30]])
    sot.force = {1: [201, 10, 15, 20]}  # x1 = 201 >= W = 200
    _step(mot, 2, [])
    assert mot.tracks == {} and sot.calls[-1] == ("remove", [1])


def test_bad_detections_raise():
    mot = MultiTracker(StubSOT(), _cfg())
    with pytest.raises(ValueError, match="scores"):
        mot.step(IMG, torch.zeros(2, 4), torch.zeros(3), 1)
    with pytest.raises(ValueError, match="NaN"):
        mot.step(IMG, torch.tensor([[0, 0, float("nan"), 1]]), torch.ones(1), 1)


def test_config_validation():
    with pytest.raises(ValueError, match="match_iou"):
        MOTConfig(match_iou=1.5)
    with pytest.raises(ValueError, match="birth_wait"):
        MOTConfig(birth_wait=0)
    with pytest.raises(ValueError, match="detector_scores"):
        MOTConfig(detector_scores={"DPM": [0.1]})


def _tiny_model():
    from trackers.siamrpn import build_siamrpn

    torch.manual_seed(0)
    return build_siamrpn("siamrpn_alex_tiny").eval()


def test_siamrpn_adapter_shifts_to_zero_based_and_moves():
    from trackers.siamrpn.tracker import BatchedSiamRPNTracker

    img = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    sot = SiamRPNSOT(BatchedSiamRPNTracker(_tiny_model()))
    sot.add(img, torch.tensor([[21.0, 31.0, 20.0, 40.0]]), [7])
    st = sot.batched.state
    # PySOT init: centre = x0 + (w - 1) / 2 with the 0-based x0 = 21 - 1
    assert st.center[0].tolist() == pytest.approx([20 + 19 / 2, 30 + 39 / 2])
    sot.move([7], torch.tensor([[51.0, 11.0, 30.0, 50.0]]))
    # the reported box (cx - w/2, shifted back to 1-based) is exactly the moved-to box
    assert (st.boxes_xywh()[0] + torch.tensor([1.0, 1, 0, 0])).tolist() == pytest.approx([51, 11, 30, 50])
    out = sot.track(img)
    assert out.ids == [7] and out.bbox.shape == (1, 4)


def test_siamrpn_end_to_end_one_frame_per_track_step():
    """The real batched SiamRPN under the MOT logic: births then one SOT pass per frame."""
    img = (np.random.default_rng(1).random((120, 160, 3)) * 255).astype(np.uint8)
    mot = siamrpn_mot_factory(_tiny_model(), _cfg())(None)
    dets = torch.tensor([[11.0, 21.0, 41.0, 81.0], [81.0, 21.0, 111.0, 81.0]])
    out = mot.step(img, dets, torch.tensor([0.9, 0.8]), 1)
    assert _ids(out) == [1, 2] and torch.allclose(out.boxes, dets.double())
    assert mot.sot.batched.ids == [1, 2]
    calls = []
    real_track = mot.sot.batched.track
    mot.sot.batched.track = lambda im: calls.append(1) or real_track(im)
    mot.step(img, dets, torch.tensor([0.9, 0.8]), 2)
    mot.step(img, dets, torch.tensor([0.9, 0.8]), 3)
    assert len(calls) == 2  # one batched pass per frame for all live targets
    assert sorted(mot.sot.batched.ids) == sorted(mot.tracks)
    frame, ids, xywh, conf = mot.results()
    assert frame[:2].tolist() == [1, 1] and ids[:2].tolist() == [1, 2]
    assert mot.timing["sot"] > 0
