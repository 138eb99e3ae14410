"""SOT pre-training pieces: anchor targets, loss, pair crops and the frame cache, a short
training/resume run, the success-rate evaluation, and the shipped synthetic weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trackers.siamrpn import build_siamrpn, load_pysot_checkpoint, load_siamrpn_config
from trackers.siamrpn.pairs import PairSampler, crop_affine
from trackers.siamrpn.targets import (AnchorTargets, anchor_targets, mine_hard_negatives, rpn_loss,
                                      training_anchors)

pytestmark = pytest.mark.usefixtures("one_thread")


def np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of cx,cy,w,h boxes a (K,4) with one box b (4,), written independently."""
    ax1, ay1, ax2, ay2 = a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    return inter / (a[:, 2] * a[:, 3] + b[2] * b[3] - inter)


@pytest.mark.parametrize("config", ["siamrpn_alex_dwxcorr", "siamrpn_r50_l234_dwxcorr"])
def test_anchor_targets_follow_pysot_rules(config):
    cfg = load_siamrpn_config(config)
    s, a = cfg.train_score_size, cfg.anchor_num
    anchors = training_anchors(cfg).numpy()
    assert anchors.shape == (a * s * s, 4)
    assert anchors[:, 0].min() == 127 - (s // 2) * 8 and anchors[:, 0].max() == 127 + (s // 2) * 8
    rng = np.random.default_rng(5)
    b = 12
    target = np.column_stack([127 + rng.uniform(-40, 40, b), 127 + rng.uniform(-40, 40, b),
                              rng.uniform(20, 120, b), rng.uniform(20, 120, b)]).astype(np.float32)
    positive = torch.tensor([True] * 9 + [False] * 3)
    t = anchor_targets(torch.from_numpy(target), positive, cfg, torch.Generator().manual_seed(0))
    for i in range(b):
        lab = t.label_cls[i].flatten().numpy()
        iou = np_iou(anchors, target[i])
        if positive[i]:
            assert (lab == 1).sum() == min(16, (iou > 0.6).sum())
            assert (lab == 0).sum() == min(64 - 16, (iou < 0.3).sum())
            assert (iou[lab == 1] > 0.6).all() and (iou[lab == 0] < 0.3).all()
            w = t.label_loc_weight[i].flatten().numpy()
            if (lab == 1).any():
                assert np.isclose(w.sum(), 1.0, atol=1e-4) and (w[lab != 1] == 0).all()
            # regression targets decode back to the target box from every anchor
            d = t.label_loc[i].reshape(4, -1).numpy()
            dec = np.column_stack([d[0] * anchors[:, 2] + anchors[:, 0], d[1] * anchors[:, 3] + anchors[:, 1],
                                   np.exp(d[2]) * anchors[:, 2], np.exp(d[3]) * anchors[:, 3]])
            assert np.allclose(dec, target[i][None], atol=1e-3)
        else:
            assert set(np.unique(lab)) <= {-1, 0} and 0 < (lab == 0).sum() <= 16
            assert t.label_loc_weight[i].sum() == 0
            ys, xs = np.nonzero((t.label_cls[i] == 0).any(0).numpy())
            cx = anchors[ys * s + xs, 0]
            cy = anchors[ys * s + xs, 1]
            assert (np.abs(cx - target[i, 0]) <= 3.5 * 8).all() and (np.abs(cy - target[i, 1]) <= 3.5 * 8).all()


@pytest.mark.parametrize("config", ["siamrpn_alex_tiny", "siamrpn_alex_dwxcorr"])
def test_mine_hard_negatives_adds_the_top_scoring_background_anchors(config):
    cfg = load_siamrpn_config(config)
    s, a = cfg.train_score_size, cfg.anchor_num
    anchors = training_anchors(cfg).numpy()
    c = cfg.train.search_size / 2
    rng = np.random.default_rng(3)
    b, k = 6, 16
    target = np.column_stack([c + rng.uniform(-30, 30, b), c + rng.uniform(-30, 30, b),
                              rng.uniform(20, 90, b), rng.uniform(20, 90, b)]).astype(np.float32)
    positive = torch.tensor([True] * 4 + [False] * 2)
    t = anchor_targets(torch.from_numpy(target), positive, cfg, torch.Generator().manual_seed(1))
    cls = torch.from_numpy(rng.normal(size=(b, 2 * a, s, s)).astype(np.float32))
    before = t.label_cls.clone()
    m = mine_hard_negatives(cls, t, torch.from_numpy(target), positive, cfg, k)
    assert torch.equal(t.label_cls, before)                       # input untouched
    assert mine_hard_negatives(cls, t, torch.from_numpy(target), positive, cfg, 0) is t
    logits = cls.view(b, 2, a, s, s).numpy()
    odds = (logits[:, 1] - logits[:, 0]).reshape(b, -1)
    for i in range(b):
        old, new = before[i].flatten().numpy(), m.label_cls[i].flatten().numpy()
        changed = np.nonzero(old != new)[0]
        assert (old[changed] == -1).all() and (new[changed] == 0).all()
        # reference: the k best-scoring anchors among the ignored, certain-background ones
        pool = old == -1
        if positive[i]:
            pool &= np_iou(anchors, target[i]) < cfg.train.thr_low
        ref = np.nonzero(pool)[0][np.argsort(-odds[i][pool], kind="stable")[:k]]
        assert set(changed.tolist()) == set(ref.tolist()) and len(changed) == min(k, pool.sum())
    assert torch.equal(m.label_loc_weight, t.label_loc_weight) and torch.equal(m.label_loc, t.label_loc)


def test_rpn_loss_matches_reference_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    b, a, s = 3, 5, 4
    cls = torch.randn(b, 2 * a, s, s, generator=g, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(b, 4 * a, s, s, generator=g, dtype=torch.float64, requires_grad=True)
    label = torch.randint(-1, 2, (b, a, s, s), generator=g)
    tl = torch.randn(b, 4, a, s, s, generator=g, dtype=torch.float64)
    w = (label == 1).double() / (label == 1).sum((1, 2, 3), keepdim=True).clamp(min=1)
    targets = AnchorTargets(label, tl, w)
    total, lc, ll = rpn_loss(cls, loc, targets, 1.0, 1.2)
    # reference: cross-entropy over the selected anchors, class logits at channel k*A + a
    logits = cls.view(b, 2, a, s, s).permute(0, 2, 3, 4, 1).reshape(-1, 2)
    lab = label.reshape(-1)
    ref_c = 0.5 * F.cross_entropy(logits[lab == 1], lab[lab == 1]) + \
        0.5 * F.cross_entropy(logits[lab == 0], lab[lab == 0])
    ref_l = sum(((loc.view(b, 4, a, s, s)[i] - tl[i]).abs().sum(0) * w[i]).sum() for i in range(b)) / b
    assert torch.allclose(lc, ref_c) and torch.allclose(ll, ref_l)
    assert torch.allclose(total, ref_c + 1.2 * ref_l)
    assert torch.autograd.gradcheck(lambda c, l: rpn_loss(c, l, targets)[0], (cls, loc))
    empty = AnchorTargets(torch.full_like(label, -1), tl, torch.zeros_like(w))
    assert rpn_loss(cls, loc, empty)[0].item() == 0.0


def test_crop_affine_is_an_exact_slice_and_pads_with_mean():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    crop = crop_affine(img, (40.0, 30.0), (1.0, 1.0), 21, np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(crop, img[20:41, 30:51])
    edge = crop_affine(img, (0.0, 0.0), (1.0, 1.0), 5, np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(edge[2:, 2:], img[:3, :3]) and (edge[0, 0] == [1, 2, 3]).all()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, SyntheticConfig(num_train=2, num_test=1, width=240, height=160,
                                            min_frames=12, max_frames=14, min_objects=2,
                                            max_objects=3), log=lambda s: None)
    return out


def test_pairs_put_the_object_where_the_target_says(tiny_data):
    cfg = load_siamrpn_config("siamrpn_alex_tiny", ["train.search_shift=0", "train.search_scale=0",
                                                    "train.color=0", "train.neg=0"])
    sampler = PairSampler(tiny_data, cfg, exclude=["MOT17-04"])
    assert [s.name.split("-")[1] for s in sampler.sequences] == ["02"]  # one variant, 04 held out
    assert sampler.tracks
    batch = sampler.sample(4, np.random.default_rng(0))
    x = cfg.train.search_size
    assert batch.template.shape == (4, 3, 127, 127) and batch.search.shape == (4, 3, x, x)
    assert batch.positive.all()
    # no jitter: the target sits at the crop centre with the GT size scaled by exemplar / s_z
    assert torch.allclose(batch.target[:, :2], torch.full((4, 2), (x - 1) / 2))
    w, h = batch.target[:, 2], batch.target[:, 3]
    p = 0.5 * (w + h)
    assert torch.allclose(torch.sqrt((w + p) * (h + p)), torch.full((4,), 127.0), rtol=1e-4)


def test_pretrain_runs_resumes_and_writes_loadable_weights(tiny_data, tmp_path):
    from deepmot.config import load_config
    from trackers.siamrpn.pretrain import PretrainConfig, evaluate_sot, main, pretrain

    out = tmp_path / "w.pth"
    args = [f"data={tiny_data}", f"out={out}", f"runs_root={tmp_path / 'runs'}", "batch_size=2",
            "warmup_steps=1", "log_every=1", "checkpoint_every=1", "threads=1"]
    cfg = load_config(PretrainConfig, None, args + ["steps=2"])
    _, run_dir = pretrain(cfg)
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "metrics.csv").is_file()
    cfg3 = load_config(PretrainConfig, None, args + ["steps=3"])
    model, same_dir = pretrain(cfg3, resume=str(run_dir))
    assert same_dir == run_dir
    steps = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert "3" in steps and steps.count("1") == steps.count("3")  # resumed, not restarted
    fresh = build_siamrpn("siamrpn_alex_tiny")
    assert load_pysot_checkpoint(fresh, out).ok
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    res = evaluate_sot(fresh, tiny_data, "test", max_tracks=2)
    assert res["tracks"] == 2 and res["frames"] > 0 and 0.0 <= res["success"] <= 1.0
    per: dict = {}
    both = evaluate_sot(fresh, tiny_data, "train", per_sequence=per)
    one = evaluate_sot(fresh, tiny_data, "train", sequences=["MOT17-04"])
    assert set(per) == {"MOT17-02", "MOT17-04"} and per["MOT17-04"] == one
    assert sum(r["frames"] for r in per.values()) == both["frames"]
    assert np.isclose(sum(r["success"] * r["frames"] for r in per.values()), both["success"] * both["frames"])
    assert main(["--eval-only", str(out), "--data", str(tiny_data), "--set",
                 "eval_max_tracks=1", "--set", "threads=1"]) == 0


def test_pretrain_with_mined_pairs_resumes_exactly(tiny_data, tmp_path):
    from deepmot.config import load_config
    from trackers.siamrpn.pretrain import PretrainConfig, pretrain

    args = [f"data={tiny_data}", f"runs_root={tmp_path / 'runs'}", "batch_size=4", "warmup_steps=1",
            "checkpoint_every=1", "threads=1", "drift=0.5", "hard_anchors=8",
            "hard_negatives=0.5"]
    straight, _ = pretrain(load_config(PretrainConfig, None, args + ["steps=3", f"out={tmp_path / 'a.pth'}"]))
    _, run_dir = pretrain(load_config(PretrainConfig, None, args + ["steps=2", f"out={tmp_path / 'b.pth'}"]))
    assert "tracker failures kept" in (run_dir / "log.txt").read_text()
    resumed, _ = pretrain(load_config(PretrainConfig, None, args + ["steps=3", f"out={tmp_path / 'b.pth'}"]),
                          resume=str(run_dir))
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_frame_cache_holds_decoded_frames_and_their_mean(tiny_data):
    import cv2

    cfg = load_siamrpn_config("siamrpn_alex_tiny")
    sampler = PairSampler(tiny_data, cfg, cache_images=3)
    assert {s.name.split("-")[1] for s in sampler.sequences} == {"02", "04"}
    for f in (1, 2, 3, 4, 1):
        img, mean = sampler._frame(0, f)
        ref = cv2.imread(str(sampler.sequences[0].image_path(f)), cv2.IMREAD_COLOR)
        assert np.array_equal(img, ref)
        assert np.allclose(mean, ref.reshape(-1, 3).astype(np.float64).mean(0), rtol=0, atol=1e-9)
        assert len(sampler._cache) <= 3
    assert (0, 1) in sampler._cache and (0, 2) not in sampler._cache  # first in, first out


def test_hard_negatives_come_from_the_same_scene_near_the_template_frame(tiny_data):
    cfg = load_siamrpn_config("siamrpn_alex_tiny")
    rng = np.random.default_rng(0)
    hard = PairSampler(tiny_data, cfg, hard_negatives=1.0)
    easy = PairSampler(tiny_data, cfg, hard_negatives=0.0)
    seqs = set()
    for _ in range(30):
        tr = hard.tracks[rng.integers(len(hard.tracks))]
        frame = int(rng.choice(tr.frames))
        other, j = hard._negative(rng, tr, frame)
        assert other is not tr and other.seq == tr.seq
        assert abs(other.frames[j] - frame) == np.abs(other.frames - frame).min()
        other, _ = easy._negative(rng, tr, frame)
        assert other is not tr
        seqs.add(other.seq != tr.seq)
    assert seqs == {True, False}  # plain negatives come from any sequence


def test_drift_records_are_the_single_target_trackers_failures(tiny_data):
    from deepmot.boxes import box_iou, xywh_to_xyxy
    from deepmot.datasets.mot import discover_sequences, read_gt
    from trackers.siamrpn.pretrain import mine_drift
    from trackers.siamrpn.tracker import SiamRPNTracker
    import cv2

    torch.manual_seed(0)
    model = build_siamrpn("siamrpn_alex_tiny").eval()  # untrained: it fails often
    records = mine_drift(model, tiny_data, "train", exclude=["MOT17-04"])
    assert records and {r.seq for r in records} == {"MOT17-02"}
    info = [i for i in discover_sequences(tiny_data, "train") if "MOT17-02" in i.name][0]
    rows = read_gt(info.gt_path)
    rows = rows.select((rows.cls == 1) & (rows.conf == 1))
    ref = []
    for ident in np.unique(rows.id):   # reference: each object alone through the one-target tracker
        sel = np.nonzero(rows.id == ident)[0]
        sel = sel[np.argsort(rows.frame[sel])]
        tracker = SiamRPNTracker(model)
        box = rows.xywh[sel[0]].copy()
        box[:2] -= 1
        img = lambda f: cv2.imread(str(info.image_path(int(f))), cv2.IMREAD_COLOR)
        tracker.init(img(rows.frame[sel[0]]), box)
        for r in sel[1:]:
            view = np.r_[tracker.center_pos, tracker.size]
            out = tracker.track(img(rows.frame[r]))
            g = torch.tensor(rows.xywh[r], dtype=torch.float64)
            g[:2] -= 1
            iou = float(box_iou(xywh_to_xyxy(torch.tensor(out["bbox"], dtype=torch.float64)[None]),
                                xywh_to_xyxy(g[None]))[0, 0])
            w, h = view[2:]
            p = 0.5 * (w + h)
            s_x = np.sqrt((w + p) * (h + p)) * 191 / 127
            gc = g[:2].numpy() + (g[2:].numpy() - 1) / 2
            if iou <= 0.5 and (np.abs(gc - view[:2]) < s_x / 2).all():
                ref.append((int(ident), int(rows.frame[r]), view))
    got = sorted((r.ident, r.frame, np.asarray(r.view)) for r in records)
    ref = sorted(ref, key=lambda t: t[:2])
    assert [g[:2] for g in got] == [r[:2] for r in ref]
    assert all(np.allclose(g[2], r[2], atol=1e-6) for g, r in zip(got, ref))


def test_drift_pairs_cut_the_search_crop_where_the_tracker_looked(tiny_data):
    from trackers.siamrpn.pairs import DriftRecord, context_side

    cfg = load_siamrpn_config("siamrpn_alex_tiny", ["train.search_shift=0", "train.search_scale=0",
                                                    "train.template_shift=0", "train.template_scale=0",
                                                    "train.color=0", "train.gray=0"])
    sampler = PairSampler(tiny_data, cfg, exclude=["MOT17-04"])
    tr = sampler.tracks[0]
    x, y, w, h = tr.xywh[1]
    cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
    view = (cx + 10.0, cy - 5.0, w * 1.2, h * 1.2)
    kept = sampler.add_drift([DriftRecord("MOT17-02", tr.ident, int(tr.frames[1]), view),
                              DriftRecord("MOT17-02", 10**6, 1, view),       # unknown object
                              DriftRecord("MOT17-04", tr.ident, 1, view)], 1.0)  # excluded sequence
    assert kept == 1
    b = sampler.sample(3, np.random.default_rng(0))
    assert b.positive.all()
    k = 127 / context_side(view[2], view[3], 0.5)
    c = (cfg.train.search_size - 1) / 2
    want = torch.tensor([c - 10 * k, c + 5 * k, w * k, h * k], dtype=torch.float32).expand(3, 4)
    assert torch.allclose(b.target, want, atol=1e-4)
    img, mean = sampler._frame(tr.seq, int(tr.frames[1]))
    ref = crop_affine(img, view[:2], (k, k), cfg.train.search_size, mean)
    assert np.array_equal(b.search[0].numpy().transpose(1, 2, 0), ref)
    # the template is the object's first box, as a tracker's is
    (x0, y0, w0, h0), f0 = tr.xywh[0], int(tr.frames[0])
    img0, mean0 = sampler._frame(tr.seq, f0)
    z = crop_affine(img0, (x0 + (w0 - 1) / 2, y0 + (h0 - 1) / 2), (127 / context_side(w0, h0, 0.5),) * 2,
                    127, mean0)
    assert np.array_equal(b.template[0].numpy().transpose(1, 2, 0), z)


@pytest.mark.parametrize("bad", ["drift=2", "drift=-0.1", "hard_negatives=1.5", "hard_anchors=-1"])
def test_bad_pretrain_option_is_one_error_line(bad, capsys):
    from trackers.siamrpn.pretrain import main

    with pytest.raises(SystemExit) as e:
        main(["--set", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert bad.split("=")[0] in err and "Traceback" not in err


def test_unknown_optimizer_is_a_clear_error(tiny_data, tmp_path):
    from deepmot.config import load_config
    from trackers.siamrpn.pretrain import PretrainConfig, pretrain

    with pytest.raises(ValueError, match="optimizer"):  # refused where the config is loaded
        load_config(PretrainConfig, None, [f"data={tiny_data}", "optimizer=lbfgs", "steps=1", "threads=1",
                                           f"runs_root={tmp_path}", f"out={tmp_path / 'w.pth'}"])
    cfg = PretrainConfig(data=str(tiny_data), optimizer="lbfgs", steps=1, threads=1, runs_root=str(tmp_path),
                         out=str(tmp_path / "w.pth"))
    with pytest.raises(ValueError, match="optimizer"):  # and by the loop, for a config built in code
        pretrain(cfg)


@pytest.mark.parametrize("seed", [8, 9])
def test_shipped_weights_track_unseen_synthetic_sequences(tmp_path, seed):
    """The shipped weights (trained on synthetic seed 0) track objects of freshly generated
    sequences far better than a box that never moves (computed here from the GT alone)."""
    from deepmot.datasets.mot import discover_sequences, read_gt
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
    from trackers.siamrpn.pretrain import SYNTHETIC_WEIGHTS, evaluate_sot

    generate_synthetic(tmp_path, SyntheticConfig(seed=seed, num_train=0, num_test=1, width=320,
                                                 height=180, min_frames=40, max_frames=40,
                                                 min_objects=4, max_objects=4), log=lambda s: None)
    info = discover_sequences(tmp_path, "test")[0]
    rows = read_gt(info.gt_path, info.seq_length)
    rows = rows.select((rows.cls == 1) & (rows.conf == 1))
    hits = frames = 0
    for ident in np.unique(rows.id):
        sel = rows.id == ident
        xywh = rows.xywh[sel][np.argsort(rows.frame[sel])]
        cxcywh = np.column_stack([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]])
        iou = np_iou(cxcywh[1:], cxcywh[0])          # the first box, kept still
        hits += int((iou > 0.5).sum())
        frames += len(iou)
    static = hits / frames
    model = build_siamrpn("siamrpn_alex_tiny")
    assert load_pysot_checkpoint(model, SYNTHETIC_WEIGHTS).ok
    res = evaluate_sot(model, tmp_path, "test")
    assert res["frames"] == frames and res["tracks"] == len(np.unique(rows.id))
    assert res["success"] >= 0.5 and res["success"] >= static + 0.3
