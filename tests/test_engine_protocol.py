"""The engine is generic: a toy tracker (constant-velocity boxes plus one learnable offset),
written against deepmot.engine.protocol alone, is fine-tuned by the DeepMOT loop and evaluated
through the inference protocol, with no SiamRPN anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

import trackers
from deepmot.boxes import box_iou
from deepmot.config import load_config
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.engine import deepmot_train as dt
from deepmot.engine.protocol import StepOutput, TrackerPlugin, TrainContext

pytestmark = pytest.mark.usefixtures("one_thread")

START = torch.tensor([3.0, -2.0, 3.0, -2.0])   # the offset the toy starts with (pixels)


class ToyNet(nn.Module):
    """The only trainable thing: a pixel offset (4,) added to every predicted xyxy box."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(START.clone())


class ToyTracks:
    """Constant velocity per track: predicted box = last box + last displacement + offset."""

    def __init__(self, net: ToyNet):
        self.net = net
        self.box: dict[int, torch.Tensor] = {}
        self.vel: dict[int, torch.Tensor] = {}
        self.next_id = 1

    @property
    def ids(self) -> list[int]:
        return list(self.box)

    def __len__(self) -> int:
        return len(self.box)

    def add(self, image, boxes, gen):
        new = []
        for b in boxes.double():
            self.box[self.next_id], self.vel[self.next_id] = b.clone(), torch.zeros(4, dtype=torch.float64)
            new.append(self.next_id)
            self.next_id += 1
        return new

    def reinit(self, image, ids, boxes, gen):
        for i, b in zip(ids, boxes.double()):
            self.box[i], self.vel[i] = b.clone(), torch.zeros(4, dtype=torch.float64)

    def remove(self, ids):
        for i in ids:
            self.box.pop(i)
            self.vel.pop(i)

    def step(self, image, gen):
        ids = self.ids
        base = torch.stack([self.box[i] + self.vel[i] for i in ids]).float()
        return StepOutput(ids=ids, boxes=base + self.net.offset, state=base)

    def advance(self, out):
        for i, b in zip(out.ids, out.state.double()):
            if i in self.box:
                self.vel[i], self.box[i] = b - self.box[i], b


class ToySequenceTracker:
    """Inference: detections linked to the constant-velocity predictions by Hungarian IoU."""

    def __init__(self, net: ToyNet):
        self.tracks = ToyTracks(net)
        self.rows: list[tuple[int, int, list[float]]] = []

    def step(self, image, det_boxes, det_scores, frame):
        t = self.tracks
        dets = det_boxes.double()[det_scores > 0.5]
        ids = t.ids
        matched: dict[int, int] = {}
        if ids and len(dets):
            pred = t.step(image, None).boxes.detach().double()
            iou = box_iou(pred, dets).numpy()
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] > 0.3:
                    matched[c] = ids[r]
        for c, i in matched.items():
            t.vel[i], t.box[i] = dets[c] - t.box[i], dets[c].clone()
        t.remove([i for i in ids if i not in matched.values()])
        fresh = [c for c in range(len(dets)) if c not in matched]
        born = t.add(image, dets[fresh], None) if fresh else []
        for i in list(matched.values()) + born:
            b = t.box[i].tolist()
            self.rows.append((frame, i, [b[0], b[1], b[2] - b[0], b[3] - b[1]]))

    def results(self):
        if not self.rows:
            return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0)
        f, i, b = zip(*self.rows)
        return np.array(f), np.array(i), np.array(b, dtype=np.float64), np.ones(len(f))


class ToyTrainable:
    weights_name = "toy.pth"
    aux_name = "focal"

    def __init__(self, device):
        self.module = ToyNet().to(device)
        self.frozen: list[str] = []

    def trainable_parameters(self):
        return [self.module.offset]

    def new_tracks(self):
        return ToyTracks(self.module)

    def aux_loss(self, out, target, present, gt_boxes):
        return None                          # the criterion alone trains the toy

    def sequence_factory(self, mot):
        return lambda seq_info: ToySequenceTracker(self.module)


def build_toy(cfg, ctx: TrainContext) -> ToyTrainable:
    return ToyTrainable(ctx.device)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    generate_synthetic(root, SyntheticConfig(seed=4, num_train=1, num_test=1, width=160, height=96, min_frames=8,
                                             max_frames=8, min_objects=2, max_objects=2, static_persons=0,
                                             reflections=0, camera_pan=0.0))
    return root


@pytest.mark.slow
def test_toy_tracker_trains_through_the_protocol_and_evaluates(data, tmp_path, monkeypatch):
    plugin = TrackerPlugin("toy", build_inference=lambda cfg, ckpt: None, build_trainable=build_toy)
    monkeypatch.setitem(trackers._REGISTRY, "toy", plugin)
    assert "toy" in trackers.trainable_trackers()
    cfg = load_config(dt.DeepMOTTrainConfig, None, [
        "tracker=toy", f"data={data}", f"runs_root={tmp_path}", "name=toy", "threads=1", "epochs=3",
        "seq_len=8", "num_repeats=2", "refresh_every=0", "lr=0.3", "w_mota=0", "w_motp=5", "iou_threshold=0.3",
        "eval_every=0", "eval_before=True", "eval_after=True", "validation.detections=[FRCNN]",
        "augment.birth_scale_prob=0", "hand_back=last"])   # the trained offset, not the validation's pick
    res = dt.run(cfg, trackers.get_tracker(cfg.tracker).build_trainable)
    run_dir = Path(res["run_dir"])
    final = torch.load(run_dir / "toy.pth", weights_only=True)["offset"]
    # dMOTP pulls the predicted boxes onto the GT: the offset shrinks
    assert torch.isfinite(final).all() and final.abs().sum() < 0.5 * START.abs().sum(), final
    # validation ran through the inference protocol, before and after, with real result files
    for key in ("before", "after"):
        assert {"MOTA", "IDF1", "IDSW"} <= res[key].keys() and -1.0 <= res[key]["MOTA"] <= 1.0
    assert list((run_dir / "eval").glob("step*/*.txt"))
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ck["finished"] and ck["step"] > 0 and torch.equal(ck["model"]["offset"], final)
    # the toy has no shipped_state(): the final report has no shipped row, and says why
    assert res["report"]["rows"][1] == {"label": "shipped", "metrics": None, "why": "the tracker ships no weights"}
    assert res["report"]["handed_back_step"] == ck["step"]


def test_the_plugins_input_checks_run_before_a_run_directory_exists(data, tmp_path):
    """run() hands the config to the plugin's check_trainable first: its one-line error stops the
    run before anything is built or written (the engine imports no tracker to check it)."""
    from deepmot.config import ConfigError

    seen = []

    def check(cfg):
        seen.append(cfg.tracker)
        raise ConfigError("--pretrained: toy.pth: does not fit model 'toy'")

    def build(cfg, ctx):
        raise AssertionError("built after a failed check")

    cfg = load_config(dt.DeepMOTTrainConfig, None, ["tracker=toy", f"data={data}", f"runs_root={tmp_path / 'runs'}",
                                                    "threads=1"])
    with pytest.raises(ConfigError, match="does not fit model 'toy'"):
        dt.run(cfg, build, check_inputs=check)
    assert seen == ["toy"] and not (tmp_path / "runs").exists()
