"""Validation split and final report of DeepMOT fine-tuning: the synthetic set's val/ split is
its own, the loop reads no test sequence before its final report (every file and folder the
process opens is recorded with an audit hook), and the hand-back rule keeps the starting
tracker when fine-tuning does not beat it on validation."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.dhn.model import DeepHungarianNet
from deepmot.config import load_config
from deepmot.engine import deepmot_train as dt
from deepmot.engine.final_report import format_report
from trackers import get_tracker
from trackers.siamrpn import build_siamrpn
from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS

pytestmark = pytest.mark.usefixtures("one_thread")
SIAMRPN = get_tracker("siamrpn").build_trainable

TINY = dict(seed=4, num_train=1, num_test=1, width=160, height=96, min_frames=6, max_frames=7,
            min_objects=2, max_objects=3, static_persons=0, reflections=0, camera_pan=0.0)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_val_split_is_its_own_and_leaves_train_and_test_unchanged(tmp_path):
    generate_synthetic(tmp_path / "with", SyntheticConfig(**TINY, num_val=2))
    generate_synthetic(tmp_path / "without", SyntheticConfig(**TINY, num_val=0))
    for split in ("train", "test"):
        assert _digests(tmp_path / "with" / split) == _digests(tmp_path / "without" / split)
    assert not (tmp_path / "without" / "val").exists()
    val = sorted(p.name for p in (tmp_path / "with" / "val").iterdir())
    assert val == [f"MOT17-{n}-{v}" for n in (91, 92) for v in ("DPM", "FRCNN", "SDP")]
    seqmap = (tmp_path / "with" / "seqmaps" / "MOT17-val.txt").read_text().split()
    assert seqmap == ["name", *val]
    # its own scenes: no val frame or GT file equals one of train or test
    others = {d for s in ("train", "test") for k, d in _digests(tmp_path / "with" / s).items()
              if k.endswith((".jpg", "gt.txt"))}
    mine = {d for k, d in _digests(tmp_path / "with" / "val").items() if k.endswith((".jpg", "gt.txt"))}
    assert mine and not mine & others


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("final_report")
    generate_synthetic(root / "data", SyntheticConfig(**TINY, num_val=1))
    torch.manual_seed(0)
    dhn = DeepHungarianNet(hidden_size=8)
    torch.save({"model": dhn.state_dict(), "model_config": {"hidden_size": 8}}, root / "dhn.pt")
    torch.manual_seed(0)
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), root / "init.pth")
    return {"root": root}


def _cfg(world: dict, **extra) -> dt.DeepMOTTrainConfig:
    root = world["root"]
    base = {"data": str(root / "data"), "dhn": str(root / "dhn.pt"), "pretrained": str(root / "init.pth"),
            "runs_root": str(root / "runs"), "seq_len": 3, "num_repeats": 1, "epochs": 1, "max_steps": 2,
            "log_every": 1000, "eval_every": 0, "threads": 1, "refresh_every": 2,
            "validation": {"split": "val", "detections": ["FRCNN"]}}
    base.update(extra)
    return load_config(dt.DeepMOTTrainConfig, None,
                          [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                           for k, v in base.items()])


class _Opened:
    """Records the paths that Python opens or lists (``open``, ``os.listdir``, ``os.scandir``
    audit events) while active; an audit hook cannot be removed, so it goes inert afterwards."""

    def __init__(self):
        self.paths: list[Path] | None = None
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.paths is not None and event in ("open", "os.listdir", "os.scandir") and args:
            p = args[0]
            if isinstance(p, (str, bytes, Path)):
                self.paths.append(Path(p.decode() if isinstance(p, bytes) else p).absolute())

    def __enter__(self) -> list[Path]:
        self.paths = []
        return self.paths

    def __exit__(self, *exc) -> None:
        self.paths = None


def test_loop_reads_no_test_sequence_before_its_final_report(world):
    """The whole main job (SOT pre-training, validation before/after, the shipped row) reads
    train and val only; the test split is opened only by the final report, after everything else."""
    data = (world["root"] / "data").absolute()
    cfg = _cfg(world, pretrained=None, pretrain=["steps=2", "batch_size=2"], name="reads",
               test={"split": "test", "detections": ["FRCNN"]})
    recorder = _Opened()
    with recorder as opened:
        res = dt.run(cfg, SIAMRPN)
    split_of = [p.relative_to(data).parts[0] for p in opened if p.is_relative_to(data) and p != data]
    assert "train" in split_of and "val" in split_of and "test" in split_of
    first_test = split_of.index("test")
    assert set(split_of[first_test:]) == {"test"}, "a train/val read came after the test split was opened"
    report = res["report"]
    assert [r["label"] for r in report["rows"]] == ["start", "shipped", "after"]
    assert report["test"] is not None and 0 <= report["test"]["IDF1"] <= 1
    assert report["rows"][0]["metrics"] == pytest.approx(
        {k: v for k, v in res["before"].items() if isinstance(v, (int, float)) and k != "step"}, nan_ok=True)
    saved = json.loads((Path(res["run_dir"]) / "report.json").read_text())
    assert saved["handed_back_step"] == report["handed_back_step"] in (0, 2)
    if SYNTHETIC_WEIGHTS.is_file():                 # the shipped model fits siamrpn_alex_tiny
        assert report["rows"][1]["metrics"] is not None


def test_without_test_config_the_test_split_is_never_read(world):
    data = (world["root"] / "data").absolute()
    recorder = _Opened()
    with recorder as opened:
        res = dt.run(_cfg(world, name="notest", shipped_baseline=False), SIAMRPN)
    assert not any(p.is_relative_to(data / "test") for p in opened)
    assert res["report"]["test"] is None and res["report"]["rows"][1]["metrics"] is None


@pytest.mark.parametrize("start,end,hand_back,handed", [(0.5, 0.3, "best", 0), (0.3, 0.5, "best", 2),
                                                        (0.4, 0.4, "best", 0), (0.9, 0.1, "last", 2)])
def test_step_zero_is_a_candidate_and_a_worse_model_is_not_handed_back(world, start, end, hand_back, handed):
    values = iter([start, end])

    def fake_eval(model, step):
        return {"MOTA": next(values), "IDF1": 0.5, "IDSW": 3}

    cfg = _cfg(world, name=f"hand_{hand_back}{handed}", shipped_baseline=False, hand_back=hand_back)
    res = dt.run(cfg, SIAMRPN, evaluate_fn=fake_eval)
    run_dir = Path(res["run_dir"])
    init = torch.load(world["root"] / "init.pth", weights_only=True)
    final = torch.load(run_dir / "siamrpn_deepmot.pth", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert last.keys() == final.keys() == init.keys()
    assert any(not torch.equal(last[k], init[k]) for k in init)     # training moved the weights
    expected = init if handed == 0 else last
    assert all(torch.equal(final[k], expected[k]) for k in init)
    report = res["report"]
    assert report["handed_back_step"] == handed
    assert [r["metrics"]["MOTA"] for r in report["rows"] if r["metrics"]] == [start, end]
    text = "\n".join(format_report(report))
    assert f"{100 * start:.3f}" in text and f"{100 * end:.3f}" in text and f"handed back: step {handed}" in text
