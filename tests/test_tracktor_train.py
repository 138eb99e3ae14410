"""DeepMOT fine-tuning of Tracktor through the trainable-tracker protocol: only the box-regression
layer moves (and the appearance head, when its branch is on), the loss is finite, a preempted run
resumes bit for bit, and the handed-back weights load into evaluate.py's Tracktor. The appearance
branch's loss has the right gradient and counts swapped identities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from deepmot.config import load_config
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.engine import deepmot_train as dt
from deepmot.engine.deepmot_config import DeepMOTTrainConfig
from trackers import get_tracker
from trackers.tracktor.appearance import appearance_loss, mean_embedding, own_pairs
from trackers.tracktor.trainable import (SHIPPED_DETECTOR, TRAINED, TRAINED_APPEARANCE, TracktorTrainable,
                                         jitter_boxes, starting_net)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not SHIPPED_DETECTOR.is_file(), reason="shipped detector weights absent")]
BUILD = get_tracker("tracktor").build_trainable


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracktor_train")
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=1, num_test=1, num_val=0, width=320, height=180,
                                             min_frames=7, max_frames=7, min_objects=3, max_objects=4,
                                             static_persons=0, reflections=0))
    return root


def _cfg(data: Path, runs: Path, **extra) -> DeepMOTTrainConfig:
    base = {"tracker": "tracktor", "data": str(data), "runs_root": str(runs), "seq_len": 3, "num_repeats": 1,
            "epochs": 1, "log_every": 1, "eval_every": 0, "eval_before": False, "eval_after": False,
            "threads": 1, "refresh_every": 0, "train_detections": ["SDP"], "w_focal": 0.0, "w_ids": 0.0,
            "delta": 0.5, "temperature": 100.0, "lr": 1e-3, "shipped_baseline": False, "name": "tt"}
    base.update(extra)
    return load_config(DeepMOTTrainConfig, None,
                       [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                        for k, v in base.items()])


def test_jitter_keeps_boxes_valid_and_is_seeded():
    boxes = torch.tensor([[10.0, 20.0, 40.0, 100.0]]).repeat(200, 1)
    a = jitter_boxes(boxes, torch.Generator().manual_seed(0))
    b = jitter_boxes(boxes, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    moved = (a - boxes.double()).abs().sum(1) > 1e-9
    assert 0.4 < moved.float().mean() < 0.9                 # p = 0.4 shift, p = 0.4 scale
    size = a[:, 2:] - a[:, :2]
    assert (size > 0).all() and (size / torch.tensor([30.0, 80.0]) <= 1.5 + 1e-9).all()


@pytest.mark.parametrize("appearance", [False, True], ids=["geometric", "appearance"])
def test_fine_tuning_trains_only_the_box_regression_and_resumes_exactly(data, tmp_path, monkeypatch, appearance):
    """Off (``w_focal=0``): only the box-regression layer moves. On (``w_focal=1``): a new
    appearance head is added and trained too; nothing else moves; the run resumes bit for bit."""
    import csv

    from trackers.tracktor.model import load_tracktor_net

    extra = {"w_focal": 1.0} if appearance else {}
    ref = dt.run(_cfg(data, tmp_path / "a", **extra), BUILD)

    before = starting_net(_cfg(data, tmp_path / "a", **extra)).state_dict()
    assert ("reid_head.weight" in before) == appearance
    after_path = Path(ref["run_dir"]) / "tracktor_deepmot.pth"
    after = torch.load(after_path, weights_only=True)
    changed = sorted(k for k, v in after.items() if isinstance(v, torch.Tensor) and not torch.equal(v, before[k]))
    assert changed == sorted(TRAINED + (TRAINED_APPEARANCE if appearance else ()))
    with open(Path(ref["run_dir"]) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["value"]) for r in rows if r["key"] == "train/loss"]
    assert len(losses) >= 3 and torch.isfinite(torch.tensor(losses)).all() and max(losses) > 0
    aux = [float(r["value"]) for r in rows if r["key"] == "train/appearance"]
    assert (len(aux) == len(losses) and min(aux) > 0) if appearance else aux == []
    # the handed-back weights track through evaluate.py's loader, with their head
    net = load_tracktor_net(after_path)
    assert torch.equal(net.state_dict()[TRAINED[0]], after[TRAINED[0]])
    assert (net.reid_head is not None) == appearance
    if appearance:
        assert torch.equal(net.reid_head.weight, after["reid_head.weight"])

    # preempted after the first clip batch, then resumed: the same weights, bit for bit
    real_guard = dt.PreemptionGuard

    class StopOnce(real_guard):
        calls = 0

        @property
        def requested(self):
            StopOnce.calls += 1
            return StopOnce.calls == 1

    monkeypatch.setattr(dt, "PreemptionGuard", StopOnce)
    with pytest.raises(SystemExit):
        dt.run(_cfg(data, tmp_path / "b", **extra), BUILD)
    (run_dir,) = list((tmp_path / "b" / "tt").iterdir())
    stopped = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < stopped["step"] < torch.load(Path(ref["run_dir"]) / "checkpoints" / "last.pt",
                                            weights_only=True)["step"]
    monkeypatch.setattr(dt, "PreemptionGuard", real_guard)
    resumed = dt.run(_cfg(data, tmp_path / "b", **extra), BUILD, resume=str(run_dir))
    assert "resumed at epoch 0, batch 1, step 2" in (run_dir / "log.txt").read_text()
    with open(run_dir / "metrics.csv") as f:
        steps = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["key"] == "train/loss"]
    assert [v for _, v in steps] == losses and [k for k, _ in steps] == list(range(1, len(losses) + 1))
    again = torch.load(Path(resumed["run_dir"]) / "tracktor_deepmot.pth", weights_only=True)
    for k, v in after.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, again[k]), k


def test_train_cli_defaults_to_the_tracktor_config(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry_tt", REPO / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.chdir(tmp_path)                      # no data/MOT17 here: the synthetic config
    assert cli.default_config_path(None, "tracktor").endswith("deepmot_tracktor_synthetic.yaml")
    assert cli.default_config_path("/some/MOT17", "tracktor").endswith("deepmot_tracktor.yaml")
    assert cli.default_config_path(None).endswith("deepmot_siamrpn_synthetic.yaml")
    cfg = cli.config_from_args(cli.build_parser().parse_args(["--tracker", "tracktor"]))
    assert (cfg.tracker, cfg.seq_len, cfg.lr, cfg.w_ids, cfg.delta) == ("tracktor", 10, 1e-4, 0.0, 0.5)
    assert cfg.w_focal == 1.0                      # the appearance branch is on, with the paper's weight


def test_final_report_with_validation_and_the_shipped_row(data, tmp_path):
    """The loop's whole final report (start / shipped / after on validation, test once) runs on a
    TracktorNet, whose state dict carries a non-tensor entry (its architecture)."""
    import json

    cfg = _cfg(data, tmp_path, eval_before=True, eval_after=True, shipped_baseline=True, max_steps=2,
               validation={"split": "test", "frames": "full", "detections": ["SDP"], "mot": ["cmc_scale=0.5"]},
               test={"split": "test", "frames": "full", "detections": ["SDP"], "mot": []})
    out = dt.run(cfg, BUILD)
    report = json.loads((Path(out["run_dir"]) / "report.json").read_text())
    rows = {r["label"]: r["metrics"] for r in report["rows"]}
    assert list(rows) == ["start", "shipped", "after"] and all(m is not None and "MOTA" in m for m in rows.values())
    assert rows["shipped"]["MOTA"] == rows["start"]["MOTA"]       # the start is the shipped detector
    assert report["test"] is not None and "MOTA" in report["test"]
    assert (Path(out["run_dir"]) / "tracktor_deepmot.pth").is_file()


# --------------------------------------------------------------------------- the appearance branch
def _smooth_assign(d: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the DHN: large where the distance is small."""
    return torch.sigmoid((0.5 - d) * 6.0)


def _dhn64():
    from deepmot.dhn.model import DeepHungarianNet

    try:
        dhn = DeepHungarianNet.pretrained().double()
    except FileNotFoundError:
        pytest.skip("shipped DHN weights absent")
    return lambda d: dhn(d[None])[0]


@pytest.mark.parametrize("assign", ["smooth", "sinkhorn", "dhn"])
def test_appearance_loss_gradient_matches_finite_differences(assign):
    """gradcheck of the appearance loss w.r.t. the head's weight and bias (float64), on a frame with
    a ring not yet full, an absent track and a GT object without its own track."""
    from deepmot.criterion import sinkhorn_assignment

    fn = {"smooth": _smooth_assign, "sinkhorn": lambda d: sinkhorn_assignment(d, 0.1, 30),
          "dhn": None}[assign] or _dhn64()
    g = torch.Generator().manual_seed(0)
    r, d, k = 6, 5, 4
    bank = torch.randn(3, k, r, generator=g, dtype=torch.float64)
    count = torch.tensor([1, 3, 4])
    gt_rep = torch.randn(4, r, generator=g, dtype=torch.float64)
    gt_boxes = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    own = own_pairs(gt_boxes[[2, 0, 1]], torch.tensor([True, True, False]), gt_boxes)
    assert own.nonzero().tolist() == [[0, 2], [1, 0]]
    w0 = torch.randn(d, r, generator=g, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(w, b):
        head = lambda x: torch.nn.functional.linear(x, w, b)  # noqa: E731
        return appearance_loss(mean_embedding(head, bank, count), head(gt_rep), own, fn, 0.5, 10.0)

    assert torch.autograd.gradcheck(loss, (w0, b0), eps=1e-6, atol=1e-5)
    gw, gb = torch.autograd.grad(loss(w0, b0), (w0, b0))
    assert gw.norm() > 1e-4 and gb.norm() > 1e-4            # a detached head would pass gradcheck with zeros
    # empty frames: a zero attached to the head
    for n, m in ((0, 4), (3, 0)):
        out = appearance_loss(mean_embedding(lambda x: torch.nn.functional.linear(x, w0, b0), bank[:n], count[:n]),
                              torch.nn.functional.linear(gt_rep[:m], w0, b0), own[:n, :m], fn, 0.5, 10.0)
        assert out.dim() == 0 and float(out.detach()) == 0.0 and out.requires_grad


@pytest.mark.parametrize("assign", ["dhn", "sinkhorn"])
def test_appearance_loss_is_lower_with_own_features_than_swapped(assign):
    """Tracks whose stored features are their own GT's score lower than the same tracks with two of
    them swapped, also with the MOTP term off: the soft ID switches count the swap."""
    from deepmot.criterion import DeepMOTLoss
    from deepmot.dhn.model import DeepHungarianNet

    dhn = None
    if assign == "dhn":
        try:
            dhn = DeepHungarianNet.pretrained()
        except FileNotFoundError:
            pytest.skip("shipped DHN weights absent")
    crit = DeepMOTLoss(dhn, delta=0.5, temperature=100.0, assignment=assign)
    g = torch.Generator().manual_seed(1)
    gt_rep = torch.randn(4, 32, generator=g)
    head = torch.nn.Linear(32, 16)
    gt_boxes = torch.tensor([[0.0, 0, 10, 20], [20, 0, 30, 20], [40, 0, 50, 20], [60, 0, 70, 20]])
    own = own_pairs(gt_boxes, torch.ones(4, dtype=torch.bool), gt_boxes)
    assert torch.equal(own, torch.eye(4, dtype=torch.bool))

    def loss(order, **w):
        bank = gt_rep[order][:, None].repeat(1, 3, 1)            # three stored copies per track
        with torch.no_grad():
            return float(appearance_loss(mean_embedding(head, bank, torch.full((4,), 3)), head(gt_rep), own,
                                         crit.assign, crit.delta, crit.temperature, **w))

    mine, swapped = [0, 1, 2, 3], [1, 0, 2, 3]
    assert loss(swapped) > loss(mine) + 0.5
    assert loss(swapped, w_motp=0.0) > loss(mine, w_motp=0.0) + 0.5          # the IDS term
    assert loss(swapped, w_motp=0.0, w_ids=0.0) == pytest.approx(loss(mine, w_motp=0.0, w_ids=0.0), abs=1e-3)


def test_shipped_state_holds_the_starting_head(data, tmp_path):
    """The ``shipped`` row of the final report: the shipped detector with the appearance head as
    it started, whatever the head has become; the state fits the net."""
    from trackers.tracktor.model import load_tracktor_net

    cfg = _cfg(data, tmp_path, w_focal=1.0)
    tr = TracktorTrainable(starting_net(cfg), cfg)
    start = {k: v.clone() for k, v in tr.module.state_dict().items() if k.startswith("reid_head.")}
    assert sorted(start) == sorted(TRAINED_APPEARANCE) and tr.aux_name == "appearance"
    assert sorted(n for n, p in tr.module.named_parameters() if p.requires_grad) == sorted(TRAINED + TRAINED_APPEARANCE)
    with torch.no_grad():
        tr.module.reid_head.weight.add_(1.0)
        tr.module.detector.roi_heads.box_predictor.bbox_pred.bias.add_(1.0)
    state, source = tr.shipped_state()
    assert source == str(SHIPPED_DETECTOR)
    shipped = load_tracktor_net(SHIPPED_DETECTOR).state_dict()
    assert torch.equal(state[TRAINED[1]], shipped[TRAINED[1]])
    for k, v in start.items():
        assert torch.equal(state[k], v), k
    tr.module.load_state_dict(state)
    # the same seed draws the same head; the switch off adds none
    assert torch.equal(starting_net(cfg).reid_head.weight, start["reid_head.weight"])
    assert starting_net(_cfg(data, tmp_path)).reid_head is None


def test_appearance_weights_run_in_evaluate(data, tmp_path):
    """``evaluate.py --tracker tracktor --checkpoint tracktor_deepmot.pth`` with a trained head: the
    head is loaded and its 128-d embeddings are what re-identification stores."""
    import importlib.util
    import json

    from deepmot.config import load_config
    from deepmot.datasets import Sequence, discover_sequences
    from trackers.multi_config import InferenceFileConfig

    out = dt.run(_cfg(data, tmp_path / "r", w_focal=1.0, max_steps=2), BUILD)
    weights = Path(out["run_dir"]) / "tracktor_deepmot.pth"
    factory = get_tracker("tracktor").build_inference(load_config(InferenceFileConfig, None, []), str(weights))
    seq = Sequence(discover_sequences(data, "test", detections=["SDP"])[0])
    tr = factory(seq.info)
    assert torch.equal(tr.net.reid_head.weight, torch.load(weights, weights_only=True)["reid_head.weight"])
    for i in range(3):
        fr = seq[i]
        tr.step(fr.image, fr.det_boxes, fr.det_scores, fr.index)
    assert len(tr.active) and tr.active.feats.shape[-1] == 128 and bool((tr.active.nfeat > 0).all())

    spec = importlib.util.spec_from_file_location("evaluate_entry_app", REPO / "evaluate.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    res = tmp_path / "eval"
    assert ev.main(["--tracker", "tracktor", "--data", str(data), "--split", "test", "--detections", "SDP",
                    "--checkpoint", str(weights), "--out", str(res), "--no-hota"]) == 0
    assert "MOTA" in json.dumps(json.loads((res / "summary.json").read_text()))
