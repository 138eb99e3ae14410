"""DeepMOT fine-tuning loop: focal loss against the spec formula, clip sampling, frozen layers,
edge cases (frames without GT, every track dying, one object), exact resume after kill -9 and
after a SIGTERM preemption, and 2-process gloo data parallelism against the single-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from deepmot.config import load_config, save_config
from deepmot.datasets.mot import read_gt, write_gt
from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
from deepmot.dhn.model import DeepHungarianNet
from deepmot.engine import deepmot_train as dt
from deepmot.engine.clips import cut_clips, epoch_order, shard
from deepmot.runtime.distributed import DistInfo
from deepmot.runtime.run import Run
from trackers import get_tracker
from trackers.siamrpn import build_siamrpn
from trackers.siamrpn.trainable import SiamRPNTrainable, anchor_focal_loss

REPO = Path(__file__).resolve().parents[1]
SIAMRPN = get_tracker("siamrpn").build_trainable


def _run(cfg, **kw):
    """The DeepMOT loop on the registry's SiamRPN (what ``train.py --tracker siamrpn`` runs)."""
    return dt.run(cfg, SIAMRPN, **kw)


def _entry():
    """train.py as a module (its parser and config resolution)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry_dt", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny synthetic data (two layouts), a small random DHN and random starting SiamRPN weights."""
    root = tmp_path_factory.mktemp("deepmot_train")
    small = dict(num_test=1, width=160, height=96, min_frames=7, max_frames=8, static_persons=0,
                 reflections=0, camera_pan=0.0)
    generate_synthetic(root / "multi", SyntheticConfig(seed=1, num_train=2, min_objects=2, max_objects=3, **small))
    generate_synthetic(root / "single", SyntheticConfig(seed=2, num_train=1, min_objects=1, max_objects=1, **small))
    torch.manual_seed(0)
    dhn = DeepHungarianNet(hidden_size=8)
    torch.save({"model": dhn.state_dict(), "model_config": {"hidden_size": 8}}, root / "dhn.pt")
    torch.manual_seed(0)
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), root / "init.pth")
    return {"root": root}


def _overrides(world: dict, data: str = "multi", **extra) -> list[str]:
    root = world["root"]
    base = {"data": str(root / data), "dhn": str(root / "dhn.pt"), "pretrained": str(root / "init.pth"),
            "runs_root": str(root / "runs"), "seq_len": 3, "num_repeats": 2, "epochs": 1,
            "log_every": 1000, "eval_every": 0, "eval_before": False, "eval_after": False, "threads": 1,
            "refresh_every": 2, "train_detections": ["DPM"]}
    base.update(extra)
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in base.items()]


def _cfg(world: dict, data: str = "multi", **extra) -> dt.DeepMOTTrainConfig:
    return load_config(dt.DeepMOTTrainConfig, None, _overrides(world, data, **extra))


def _weights(run_dir: str | Path) -> dict:
    return torch.load(Path(run_dir) / "siamrpn_deepmot.pth", weights_only=True)


def _assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=atol), k


# --------------------------------------------------------------------------- units
def _focal_reference(cls, anchors, target, present, pos_iou, neg_iou, gamma=2.0, others=None, distractor=0.0):
    """specs/deepmot.md §6.5 written out with the 2-way softmax, one track at a time."""
    from torchvision.ops import box_iou

    out = []
    for i in range(cls.shape[0]):
        iou = box_iou(anchors[i].double(), target[i:i + 1].double())[:, 0] if present[i] else \
            torch.zeros(anchors.shape[1], dtype=torch.float64)
        y1 = (iou > pos_iou).double()
        y0 = (iou < neg_iou).double()
        n1, n = y1.sum(), (y1 + y0).sum()
        w0 = 1.0 if n1 == 0 else n1 / n
        w1 = 1.0 - n1 / n
        if distractor > 0:      # negatives lying on another GT box weigh `distractor`
            on_other = box_iou(anchors[i].double(), others.double()).max(dim=1).values > pos_iou
            w0 = torch.where(on_other & (y0 > 0), torch.tensor(distractor, dtype=torch.float64),
                             torch.as_tensor(w0, dtype=torch.float64))
        p = torch.softmax(cls[i].double(), dim=1).clamp(1e-12, 1 - 1e-12)
        l = -(w1 * y1 * p[:, 0] ** gamma * torch.log(p[:, 1]) + w0 * y0 * p[:, 1] ** gamma * torch.log(p[:, 0]))
        out.append(l.mean())
    return torch.stack(out).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchor_focal_loss_matches_spec_formula(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = 3, 40
    centres = torch.rand(n, k, 2, generator=g) * 100
    sizes = 10 + torch.rand(n, k, 2, generator=g) * 30
    anchors = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=2)
    # targets equal to a few anchors (so there are positives), one track's object absent
    target = anchors[torch.arange(n), torch.tensor([0, 5, 9])] + torch.randn(n, 4, generator=g)
    present = torch.tensor([True, True, False])
    cls = torch.randn(n, k, 2, generator=g, dtype=torch.float64, requires_grad=True)
    ours = anchor_focal_loss(cls, anchors, target, present, 0.6, 0.3, 2.0)
    ref = _focal_reference(cls.detach(), anchors, target, present, 0.6, 0.3)
    assert torch.allclose(ours.double(), ref, rtol=1e-6, atol=1e-9)
    ours.backward()
    assert torch.isfinite(cls.grad).all() and cls.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_anchor_focal_loss_distractor_negatives(seed):
    """With distractor weights, anchors on another GT object are negatives weighing `distractor`
    (the formula written out per anchor); they raise the loss when the logits fire on them."""
    g = torch.Generator().manual_seed(seed)
    n, k = 3, 60
    centres = torch.rand(n, k, 2, generator=g) * 100
    sizes = 10 + torch.rand(n, k, 2, generator=g) * 30
    anchors = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=2)
    target = anchors[torch.arange(n), torch.tensor([0, 5, 9])] + torch.randn(n, 4, generator=g)
    present = torch.tensor([True, True, False])
    # the frame's GT: the followed objects plus two others sitting on anchors of track 0 and 2
    others = torch.cat([target[:2], anchors[0, 20:21] + 0.5, anchors[2, 30:31] - 0.5])
    cls = torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    cls[0, 20, 1] += 4.0                                          # firing on the distractor
    ours = anchor_focal_loss(cls, anchors, target, present, 0.6, 0.3, 2.0, others, 1.0)
    ref = _focal_reference(cls, anchors, target, present, 0.6, 0.3, 2.0, others, 1.0)
    assert torch.allclose(ours.double(), ref, rtol=1e-6, atol=1e-9)
    plain = anchor_focal_loss(cls, anchors, target, present, 0.6, 0.3, 2.0, others, 0.0)
    assert torch.allclose(plain.double(), _focal_reference(cls, anchors, target, present, 0.6, 0.3))
    assert float(ours) > float(plain)


def test_clips_cover_every_frame_once_and_shard_partitions():
    ranges = [(1, 10), (5, 7), (1, 1)]
    clips = cut_clips(ranges, 4)
    covered = {(c.seq, f) for c in clips for f in c.frames}
    expected = {(i, f) for i, (s, e) in enumerate(ranges) if e > s for f in range(s, e + 1)}
    assert covered == expected and sum(len(c) for c in clips) == len(expected)
    assert all(len(c) <= 4 for c in clips)
    order = epoch_order(len(clips), seed=3, epoch=1)
    assert sorted(order) == list(range(len(clips)))
    assert order == epoch_order(len(clips), seed=3, epoch=1)
    parts = [shard(order, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(order)


# --------------------------------------------------------------------------- loop
def test_frozen_convs_stay_fixed_and_others_train(world):
    res = _run(_cfg(world, max_steps=4, name="frozen"))
    before = torch.load(world["root"] / "init.pth", weights_only=True)
    after = _weights(res["run_dir"])
    convs = [k for k in before if k.startswith("backbone.") and before[k].dim() == 4]
    for k in convs[:3]:
        assert torch.equal(before[k], after[k]), k
        assert torch.equal(before[k.replace("weight", "bias")], after[k.replace("weight", "bias")])
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("rpn_head") for k in changed)
    assert any(k == convs[3] for k in changed)
    assert all(torch.isfinite(v).all() for v in after.values())


def test_train_params_trains_only_matching_parameters(world):
    """``train_params`` (a regex) leaves every other parameter and buffer as it was: with the
    loc branch alone, the classification branch (hence every score) is untouched."""
    res = _run(_cfg(world, max_steps=3, name="loconly", train_params=r"^rpn_head\.loc\.", w_focal=0.0))
    before = torch.load(world["root"] / "init.pth", weights_only=True)
    after = _weights(res["run_dir"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("rpn_head.loc.") for k in changed), sorted(changed)
    with pytest.raises(ValueError, match="not a regular expression"):
        _cfg(world, train_params="(")


def _trainer(world, data="multi", **extra):
    cfg = _cfg(world, data, **extra)
    run = Run.create("unit", cfg, root=world["root"] / "runs")
    model = build_siamrpn("siamrpn_alex_tiny")
    model.load_state_dict(torch.load(world["root"] / "init.pth", weights_only=True))
    dhn = dt.build_dhn(str(world["root"] / "dhn.pt"), torch.device("cpu"))
    root = Path(cfg.data)
    return dt.DeepMOTTrainer(cfg, run, DistInfo(), root, SiamRPNTrainable(model, cfg), dhn), run


def test_loss_is_the_weighted_sum_and_zero_weights_leave_terms_out(world):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(4)
    dmota, dmotp, focal = torch.rand(3, generator=g, dtype=torch.float64)
    res = SimpleNamespace(dmota=dmota, dmotp=dmotp)
    for w_mota, w_motp, w_focal in [(1.0, 5.0, 100.0), (0.5, 0.0, 3.0), (0.0, 2.0, 0.0), (0.0, 0.0, 7.0)]:
        trainer, run = _trainer(world, w_mota=w_mota, w_motp=w_motp, w_focal=w_focal)
        expected = w_mota * dmota + w_motp * dmotp + w_focal * focal
        assert torch.allclose(trainer._loss(res, focal), expected, rtol=1e-12)
        # a left-out term cannot leak a NaN in (0 * nan would)
        nan = SimpleNamespace(dmota=dmota if w_mota else torch.tensor(float("nan")),
                              dmotp=dmotp if w_motp else torch.tensor(float("nan")))
        assert torch.isfinite(trainer._loss(nan, focal if w_focal else torch.tensor(float("nan"))))
        run.close()
    for bad in [dict(w_mota=0.0, w_motp=0.0, w_focal=0.0), dict(w_motp=-1.0)]:
        with pytest.raises(ValueError, match="loss weights|w_motp: -1.0 is out of range"):
            _trainer(world, **bad)


@pytest.mark.parametrize("weights", [dict(w_mota=0.0, w_motp=0.0), dict(w_focal=0.0, w_motp=0.0),
                                     dict(w_focal=0.0, w_mota=0.0)])
def test_single_term_training_moves_the_head(world, weights):
    # no IoU gate, so the random starting tracker has TP pairs (dMOTP is constant without any)
    trainer, run = _trainer(world, iou_threshold=0.0, seq_len=3, num_repeats=1, log_grad_terms=True, **weights)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    clips = trainer._start_clips(list(range(len(trainer.clips))), 0)
    trainer._frame_step(clips)              # births
    logs = trainer._frame_step(clips)       # one optimiser step
    assert trainer.step == 1
    # the per-term gradient diagnostics see only the weighted-in term
    for term, w in (("dmota", "w_mota"), ("dmotp", "w_motp"), ("focal", "w_focal")):
        assert (logs[f"grad/{term}"] == 0.0) == (w in weights), term
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("rpn_head"))
    run.close()


def test_criterion_variant_fields_reach_the_loss_and_train(world):
    trainer, run = _trainer(world, assignment="sinkhorn", gate="soft", gate_width=0.1, sinkhorn_eps=0.2,
                            sinkhorn_iters=7, seq_len=3, num_repeats=1, w_motp=0.0, w_focal=0.0)
    c = trainer.criterion
    assert (c.assignment, c.gate, c.gate_width, c.sinkhorn_eps, c.sinkhorn_iters) == ("sinkhorn", "soft", 0.1, 0.2, 7)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    clips = trainer._start_clips(list(range(len(trainer.clips))), 0)
    trainer._frame_step(clips)              # births
    trainer._frame_step(clips)              # one step on dMOTA alone, through the Sinkhorn
    after = trainer.model.state_dict()
    assert trainer.step == 1 and all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("rpn_head"))
    run.close()
    default, run = _trainer(world)
    assert (default.criterion.assignment, default.criterion.gate) == ("dhn", "hard")
    run.close()
    with pytest.raises(ValueError, match="gate: 'smooth' is not one of"):  # the config's own check
        _trainer(world, gate="smooth")


def test_frame_without_gt_ends_tracks_then_births(world, tmp_path):
    # copy the one-object set and delete the GT of frame 3 of its training sequence
    import shutil

    data = tmp_path / "gap"
    shutil.copytree(world["root"] / "single", data)
    gt_path = next((data / "train").glob("*-DPM")) / "gt" / "gt.txt"
    rows = read_gt(gt_path)
    keep = rows.frame != 3
    write_gt(gt_path, rows.frame[keep], rows.id[keep], rows.xywh[keep], rows.conf[keep], rows.cls[keep],
             rows.vis[keep])
    trainer, run = _trainer(world, data=str(data), seq_len=6)
    clips = trainer._start_clips(list(range(len(trainer.clips))), 0)
    c = clips[0]
    assert c.clip.start == 1
    counts = []
    for _ in range(4):
        trainer._frame_step(clips)
        counts.append(len(c.tracks))
    # frame 1: birth of the one object; frame 2: trained; frame 3 (no GT): no track; frame 4: reborn
    assert counts[0] == 1 and counts[2] == 0 and counts[3] == 1
    assert trainer.step == trainer.cfg.num_repeats      # only frame 2 trained
    assert c.memory.as_dict() and len(c.memory) == 1
    run.close()


def test_every_track_dies_each_frame_and_training_continues(world):
    # an IoU gate above 1 forbids every pair: no TP, every track dies, every object is reborn
    trainer, run = _trainer(world, iou_threshold=1.01, seq_len=4)
    clips = trainer._start_clips(list(range(len(trainer.clips))), 0)
    c = clips[0]
    trainer._frame_step(clips)
    first_ids = set(c.tracks.ids)
    n_gt = len(first_ids)
    trainer._frame_step(clips)
    assert len(c.tracks) == n_gt and not (set(c.tracks.ids) & first_ids)   # all new tracks
    assert trainer.step == trainer.cfg.num_repeats
    run.close()


def test_single_object_sequence_and_eval_bookkeeping(world):
    values = iter([0.1, 0.3, 0.2, 0.25])

    def fake_eval(model, step):
        return {"MOTA": next(values), "IDF1": 0.5, "errors": {}}

    cfg = _cfg(world, data="single", eval_every=2, eval_before=True, eval_after=True, name="single",
               shipped_baseline=False)
    res = _run(cfg, evaluate_fn=fake_eval)
    run_dir = Path(res["run_dir"])
    assert res["before"]["MOTA"] == 0.1
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["best"] == 0.3 and best["history"][-1]["MOTA"] == 0.3
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] > 0 and last["finished"]
    assert (run_dir / "curves.png").stat().st_size > 0


def _write_cfg(world, path: Path, **extra) -> Path:
    data = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in _overrides(world, **extra))}
    path.write_text(yaml.safe_dump(data))
    return path


_REFERENCE: dict = {}


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_kill_or_preempt_then_resume_matches_uninterrupted(world, tmp_path, signum):
    """SIGKILL: the last atomic checkpoint survives; SIGTERM (a scheduler's preemption): the run
    writes a checkpoint at the next clip batch and exits with 128 + 15. Either way --resume ends
    at the weights of the uninterrupted run."""
    extra = dict(seq_len=3, num_repeats=1, name="resume")
    if "ref" not in _REFERENCE:
        _REFERENCE["ref"] = _run(_cfg(world, **extra))
    ref = _REFERENCE["ref"]
    cfg_path = _write_cfg(world, tmp_path / "cfg.yaml", **extra, runs_root=str(tmp_path / "runs"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "train.py", "--tracker", "siamrpn", "--config", str(cfg_path)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 600          # generous: the suite runs on loaded machines
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("resume/*/checkpoints/last.pt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    still_running = proc.poll() is None
    killed_at = torch.load(ckpt, weights_only=True) if ckpt is not None else None
    proc.send_signal(signum)
    rc = proc.wait()
    err.close()
    log = (tmp_path / "stderr.txt").read_text()
    assert ckpt is not None and still_running, f"the run finished before it could be stopped:\n{log[-2000:]}"
    assert not killed_at["finished"]
    run_dir = ckpt.parent.parent
    if signum == signal.SIGTERM:
        assert rc == 128 + signal.SIGTERM and "preempted at epoch" in log, log[-2000:]
        stopped = torch.load(ckpt, weights_only=True)
        assert not stopped["finished"] and stopped["step"] >= killed_at["step"]
    assert not (run_dir / "siamrpn_deepmot.pth").exists()
    resumed = _run(_cfg(world, **extra, runs_root=str(tmp_path / "runs")), resume=str(run_dir))
    _assert_same(_weights(ref["run_dir"]), _weights(resumed["run_dir"]))
    a = torch.load(Path(ref["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] > killed_at["step"]


def test_two_process_gloo_matches_single_process(world, tmp_path):
    extra = dict(seq_len=3, num_repeats=2, clips_per_step=2, max_steps=6, name="ddp")
    single = _run(_cfg(world, **extra))
    cfg_path = _write_cfg(world, tmp_path / "cfg.yaml", **extra, runs_root=str(tmp_path / "runs"))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "train.py", "--tracker", "siamrpn", "--config", str(cfg_path)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "ddp").iterdir()
    # the same clips and augmentations; only the order of the gradient sum differs
    _assert_same(_weights(single["run_dir"]), _weights(run_dir), atol=1e-5)
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 6


def test_without_pretrained_weights_sot_pretraining_runs_first(world):
    cfg = _cfg(world, pretrained=None, pretrain=["steps=2", "batch_size=2", "log_every=1"], max_steps=2,
               name="nopre")
    res = _run(cfg)
    run_dir = Path(res["run_dir"])
    sot = torch.load(run_dir / "sot_pretrained.pth", weights_only=True)
    init = torch.load(world["root"] / "init.pth", weights_only=True)
    assert sot.keys() == init.keys()
    final = _weights(run_dir)
    assert any(not torch.equal(sot[k], final[k]) for k in sot)     # fine-tuned from the SOT weights


def test_cli_flags_and_resume_config_resolution(tmp_path):
    cli = _entry()
    args = cli.build_parser().parse_args(["--tracker", "siamrpn", "--data", "d", "--pretrained", "p.pth",
                                          "--dhn-weights", "h.pt", "--name", "n",
                                         "--set", "seq_len=7", "--config", str(REPO / "configs" / "deepmot_siamrpn.yaml")])
    cfg = cli.config_from_args(args)
    assert (cfg.data, cfg.pretrained, cfg.dhn, cfg.name, cfg.seq_len) == ("d", "p.pth", "h.pt", "n", 7)
    assert cfg.model == "dasiamrpn_vot"                     # from the file
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(dt.DeepMOTTrainConfig(seq_len=13), run_dir / "config.yaml")
    resumed = cli.config_from_args(cli.build_parser().parse_args(["--resume", str(run_dir)]))
    assert resumed.seq_len == 13
    with pytest.raises(ValueError):
        cli.config_from_args(cli.build_parser().parse_args(["--set", "no_such_key=1"]))
