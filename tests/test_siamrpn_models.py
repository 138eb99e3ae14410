"""SiamRPN models against PySOT's own outputs, PySOT's key layouts and independent references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trackers
from trackers.siamrpn import build_siamrpn, load_siamrpn_config
from trackers.siamrpn.checkpoint import (CheckpointMismatchError, load_pysot_checkpoint,
                                         read_state_dict)
from trackers.siamrpn.heads import MultiRPN, xcorr_depthwise, xcorr_up
from trackers.siamrpn.neck import AdjustAllLayer, AdjustLayer

torch.set_num_threads(1)

# config name -> key list in shared/specs/pysot_keys (spec pysot.md §4)
KEY_FILES = {
    "siamrpn_alex_dwxcorr": "siamrpn_alex_dwxcorr",
    "siamrpn_alex_dwxcorr_otb": "siamrpn_alex_dwxcorr",
    "siamrpn_alex_dwxcorr_16gpu": "siamrpn_alex_dwxcorr_16gpu",
    "siamrpn_r50_l234_dwxcorr": "siamrpn_r50_l234_dwxcorr",
    "siamrpn_r50_l234_dwxcorr_otb": "siamrpn_r50_l234_dwxcorr_otb",
    "siamrpn_r50_l234_dwxcorr_lt": "siamrpn_r50_l234_dwxcorr_lt",
    "siamrpn_mobilev2_l234_dwxcorr": "siamrpn_mobilev2_l234_dwxcorr",
}
# DaSiamRPN naming -> PySOT naming, spec §9.3 (written out here independently of the loader)
DASIAM = {"featureExtract.": "backbone.features.", "conv_cls1.": "rpn_head.template_cls_conv.",
          "conv_r1.": "rpn_head.template_loc_conv.", "conv_cls2.": "rpn_head.search_cls_conv.",
          "conv_r2.": "rpn_head.search_loc_conv.", "regress_adjust.": "rpn_head.loc_adjust."}
# parameter counts, spec §2.6
PARAMS = {"siamrpn_alex_dwxcorr": 6_251_102, "siamrpn_r50_l234_dwxcorr": 53_950_624,
          "siamrpn_r50_l234_dwxcorr_otb": 53_950_618, "siamrpn_r50_l234_dwxcorr_lt": 60_018_336,
          "siamrpn_mobilev2_l234_dwxcorr": 11_150_446, "dasiamrpn_vot": 22_632_932}


def read_keys(keys_dir: Path, name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (keys_dir / f"{name}.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def fake_state(rows, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict with the listed keys/shapes; each tensor a distinct constant (cheap to make)."""
    out = {}
    offset = float(torch.rand(1, generator=gen))
    for i, (key, shape, dtype) in enumerate(rows):
        if dtype == "int64":
            out[key] = torch.tensor(7, dtype=torch.int64)
        else:
            out[key] = torch.full(shape, 0.5 + offset + 1e-3 * i)
    return out


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


# ----------------------------------------------------------------------------- PySOT outputs
# Each reference (conftest.PYSOT_REFERENCES) also loads, renamed, into PySOT's layered 'alexnet'
# layout of the same widths (siamrpn_alex_dwxcorr_16gpu's backbone naming).
LAYERED = {"siamrpn_alex_dwxcorr": ("siamrpn_alex_dwxcorr_16gpu", []),
           "siamrpn_alex_tiny": ("siamrpn_alex_dwxcorr_16gpu",
                                 ["backbone_kwargs={width_mult: 0.25}", "head_kwargs.in_channels=64",
                                  "head_kwargs.out_channels=64", "instance_size=191"])}


@pytest.mark.parametrize("layout", ["legacy", "layered"])
def test_model_matches_pysot_outputs(pysot_ref, layout):
    """Our network on PySOT's weights and PySOT's crops gives PySOT's features and outputs, at the
    tracking search size and at 255 px."""
    io = pysot_ref.io
    model = pysot_ref.model(*LAYERED[pysot_ref.name]) if layout == "layered" else pysot_ref.model()
    if layout == "layered":
        assert "backbone.layer1.0.weight" in model.state_dict()
    with torch.no_grad():
        zf = model.template(io["z"])
        assert zf.shape == io["zf"].shape and rel_err(zf, io["zf"]) < 1e-4
        bx = model.backbone(io["x"])
        assert bx.shape == io["backbone_x"].shape and rel_err(bx, io["backbone_x"]) < 1e-4
        for x, cls_ref, loc_ref in ((io["x"], io["cls"], io["loc"]),
                                    (io["x255"], io["cls255"], io["loc255"])):
            cls, loc = model.track(zf, x)
            assert cls.shape == cls_ref.shape and loc.shape == loc_ref.shape
            assert rel_err(cls, cls_ref) < 1e-4
            assert rel_err(loc, loc_ref) < 1e-4
    assert io["cls"].shape[-1] == model.cfg.score_size


def test_batched_track_correlates_each_target_with_its_own_template(pysot_ref):
    io = pysot_ref.io
    model = pysot_ref.model()
    z = torch.cat([io["z"], io["z"].flip(-1), io["z"].flip(-2)])
    x = torch.cat([io["x255"], io["x255"].flip(-1), io["x255"].flip(-2)])
    with torch.no_grad():
        cls, loc = model.track(model.template(z), x)
        assert rel_err(cls[:1], io["cls255"]) < 1e-4 and rel_err(loc[:1], io["loc255"]) < 1e-4
        for b in range(3):
            c1, l1 = model.track(model.template(z[b:b + 1]), x[b:b + 1])
            assert rel_err(cls[b:b + 1], c1) < 1e-5 and rel_err(loc[b:b + 1], l1) < 1e-5


def test_pysot_fixture_file_loads_with_wrappers(pysot_ref):
    path = pysot_ref.weights
    sd = torch.load(path, weights_only=True)
    model = build_siamrpn(pysot_ref.name)
    assert load_pysot_checkpoint(model, path).ok
    no_counter = {f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    report = load_pysot_checkpoint(model, {"state_dict": no_counter})
    assert report.ok and report.filled_num_batches_tracked == 11
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, sd[k]), k


# ----------------------------------------------------------------------------- key layouts
@pytest.mark.parametrize("config", sorted(KEY_FILES))
def test_key_layout_equals_pysot(pysot_keys_dir, config):
    rows = read_keys(pysot_keys_dir, KEY_FILES[config])
    model = build_siamrpn(config)
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert ours == rows
    if config in PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PARAMS[config]
    # a file with exactly those keys (values random) loads strictly and lands in the model
    gen = torch.Generator().manual_seed(1)
    state = fake_state(rows, gen)
    assert load_pysot_checkpoint(model, state).ok
    key = rows[0][0]
    assert torch.equal(model.state_dict()[key], state[key])


@pytest.mark.parametrize("config,keys", [("dasiamrpn_vot", "dasiamrpn_SiamRPNvot"),
                                         ("dasiamrpn_big", "dasiamrpn_SiamRPNbig")])
def test_dasiamrpn_layout_loads_after_renaming(pysot_keys_dir, config, keys):
    rows = read_keys(pysot_keys_dir, keys)
    renamed = {}
    for key, shape, dtype in rows:
        new = next((n + key[len(o):] for o, n in DASIAM.items() if key.startswith(o)), None)
        assert new is not None, key
        renamed[new] = (shape, dtype)
    model = build_siamrpn(config)
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert ours == renamed
    # the original DaSiamRPN file had no num_batches_tracked (PyTorch 0.3.1)
    state = {k: v for k, v in fake_state(rows, torch.Generator().manual_seed(2)).items()
             if not k.endswith("num_batches_tracked")}
    report = load_pysot_checkpoint(model, state)
    assert report.ok and report.renaming.startswith("DaSiamRPN")
    assert torch.equal(model.rpn_head.template_loc_conv.weight, state["conv_r1.weight"])


def test_dasiamrpn_outputs_match_its_forward():
    """UP-channel head vs DaSiamRPN's ``temple``/``forward`` written with plain conv2d (§9.1)."""
    torch.manual_seed(0)
    model = build_siamrpn("dasiamrpn_vot").eval()
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(1, 3, 271, 271) * 255
    h = model.rpn_head
    with torch.no_grad():
        cls, loc = model.track(model.template(z), x)
        zf, xf = model.backbone(z), model.backbone(x)
        r1 = h.template_loc_conv(zf).view(20, 256, 4, 4)
        c1 = h.template_cls_conv(zf).view(10, 256, 4, 4)
        delta = h.loc_adjust(F.conv2d(h.search_loc_conv(xf), r1))
        score = F.conv2d(h.search_cls_conv(xf), c1)
    assert cls.shape == (1, 10, 19, 19) and loc.shape == (1, 20, 19, 19)
    assert rel_err(cls, score) < 1e-5 and rel_err(loc, delta) < 1e-5


# ----------------------------------------------------------------------------- wrong weights
@pytest.fixture(scope="module")
def alex_layout_state(pysot_keys_dir):
    """A state dict with PySOT's siamrpn_alex_dwxcorr keys and shapes (values made up: these tests
    are about the layout, not the weights)."""
    return fake_state(read_keys(pysot_keys_dir, "siamrpn_alex_dwxcorr"), torch.Generator().manual_seed(2))


def test_wrong_architecture_raises_readable_report(alex_layout_state):
    sd = alex_layout_state
    with pytest.raises(CheckpointMismatchError) as e:
        load_pysot_checkpoint(build_siamrpn("dasiamrpn_vot"), sd)
    msg = str(e.value)
    assert "missing in checkpoint (10)" in msg and "rpn_head.template_cls_conv.weight" in msg
    assert "unexpected in checkpoint (40)" in msg and "rpn_head.cls.head.3.weight" in msg
    assert isinstance(e.value, ValueError)
    # same key names, other widths: the shapes are listed, no error from inside load_state_dict
    narrow = build_siamrpn("siamrpn_alex_dwxcorr", ["backbone_kwargs={width_mult: 0.5}",
                                                    "head_kwargs.in_channels=128"])
    with pytest.raises(CheckpointMismatchError) as e:
        load_pysot_checkpoint(narrow, sd)
    assert "backbone.features.0.weight: [96, 3, 11, 11] vs [48, 3, 11, 11]" in str(e.value)
    # non-strict: loads what fits, reports the rest
    report = load_pysot_checkpoint(narrow, sd, strict=False)
    assert not report.ok and report.mismatched and "rpn_head.cls.head.3.bias" in report.loaded
    assert torch.equal(narrow.rpn_head.cls.head[3].bias, sd["rpn_head.cls.head.3.bias"])


def test_bad_checkpoint_inputs(tmp_path):
    model = build_siamrpn("siamrpn_alex_dwxcorr")
    with pytest.raises(FileNotFoundError):
        load_pysot_checkpoint(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_pysot_checkpoint(model, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="not a tensor"):
        read_state_dict({"epoch": 3, "x": torch.zeros(1)})


# ----------------------------------------------------------------------------- parts
def test_xcorrs_match_per_sample_conv2d():
    g = torch.Generator().manual_seed(3)
    x, k = torch.randn(3, 4, 9, 9, generator=g), torch.randn(3, 4, 3, 3, generator=g)
    out = xcorr_depthwise(x, k)
    for b in range(3):
        for c in range(4):
            ref = F.conv2d(x[b:b + 1, c:c + 1], k[b:b + 1, c:c + 1])
            assert torch.allclose(out[b, c], ref[0, 0], atol=1e-5)
    ku = torch.randn(3, 2 * 4, 3, 3, generator=g)
    up = xcorr_up(x, ku)
    for b in range(3):
        assert torch.allclose(up[b:b + 1], F.conv2d(x[b:b + 1], ku[b].view(2, 4, 3, 3)), atol=1e-5)
    with pytest.raises(ValueError):
        xcorr_depthwise(x, k[:2])


def test_adjust_layer_centre_crop():
    torch.manual_seed(0)
    layer = AdjustLayer(8, 4).eval()
    z, x = torch.randn(2, 8, 15, 15), torch.randn(2, 8, 31, 31)
    with torch.no_grad():
        assert torch.equal(layer(z), layer.downsample(z)[:, :, 4:11, 4:11])
        assert torch.equal(layer(x), layer.downsample(x))
    single = AdjustAllLayer([8], [4])
    assert [k for k in single.state_dict()][0] == "downsample.downsample.0.weight"
    assert single(z).shape == (2, 4, 7, 7)


@pytest.mark.parametrize("weighted", [True, False])
def test_multirpn_fusion(weighted):
    torch.manual_seed(0)
    head = MultiRPN(5, [8, 8, 8], weighted=weighted).eval()
    if weighted:
        with torch.no_grad():
            head.cls_weight.copy_(torch.tensor([0.1, 1.0, -2.0]))
            head.loc_weight.copy_(torch.tensor([2.0, 0.0, 0.5]))
    zs = [torch.randn(2, 8, 7, 7) for _ in range(3)]
    xs = [torch.randn(2, 8, 15, 15) for _ in range(3)]
    with torch.no_grad():
        cls, loc = head(zs, xs)
        parts = [getattr(head, f"rpn{i + 2}")(zs[i], xs[i]) for i in range(3)]
    wc = torch.softmax(head.cls_weight, 0) if weighted else torch.full((3,), 1 / 3)
    wl = torch.softmax(head.loc_weight, 0) if weighted else torch.full((3,), 1 / 3)
    assert torch.allclose(cls, sum(w * p[0] for w, p in zip(wc, parts)), atol=1e-5)
    assert torch.allclose(loc, sum(w * p[1] for w, p in zip(wl, parts)), atol=1e-5)


def test_backbone_and_output_sizes():
    """Feature/score sizes of spec §2.1/§2.4 (r50 only at 127 to stay fast)."""
    torch.manual_seed(0)
    r50 = build_siamrpn("siamrpn_r50_l234_dwxcorr").eval()
    with torch.no_grad():
        feats = r50.backbone(torch.rand(1, 3, 127, 127) * 255)
        assert [tuple(f.shape) for f in feats] == [(1, 512, 15, 15), (1, 1024, 15, 15),
                                                    (1, 2048, 15, 15)]
        assert [tuple(f.shape) for f in r50.neck(feats)] == [(1, 256, 7, 7)] * 3
    mob = build_siamrpn("siamrpn_mobilev2_l234_dwxcorr").eval()
    with torch.no_grad():
        zf = mob.template(torch.rand(2, 3, 127, 127) * 255)
        cls, loc = mob.track(zf, torch.rand(2, 3, 255, 255) * 255)
    assert [tuple(f.shape) for f in zf] == [(2, 256, 7, 7)] * 3
    assert cls.shape == (2, 10, 25, 25) and loc.shape == (2, 20, 25, 25)
    assert mob.cfg.score_size == 25


def test_configs_and_errors():
    sizes = {"siamrpn_alex_dwxcorr": 21, "siamrpn_r50_l234_dwxcorr": 25, "dasiamrpn_vot": 19}
    for name, s in sizes.items():
        assert load_siamrpn_config(name).score_size == s
    assert load_siamrpn_config("siamrpn_alex_dwxcorr").train_score_size == 17
    cfg = load_siamrpn_config("siamrpn_r50_l234_dwxcorr_lt")
    assert (cfg.tracker, cfg.confidence_low, cfg.window_influence) == ("SiamRPNLTTracker", 0.8, 0.28)
    assert load_siamrpn_config("dasiamrpn_vot").flavour == "dasiamrpn"
    with pytest.raises(FileNotFoundError, match="siamrpn_alex_dwxcorr"):
        load_siamrpn_config("siamrpn_nope")
    model = build_siamrpn("siamrpn_alex_dwxcorr")
    with pytest.raises(ValueError, match="2 templates but 1 search"):
        model.track(model.template(torch.zeros(2, 3, 127, 127)), torch.zeros(1, 3, 255, 255))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.template(torch.zeros(3, 127, 127))


def test_registry_builds_siamrpn_with_weights(alex_layout_state, tmp_path):
    sd = alex_layout_state
    path = tmp_path / "siamrpn_alex_dwxcorr.pth"
    torch.save(sd, path)
    model = trackers.build_tracker("siamrpn", {"model": "siamrpn_alex_dwxcorr", "checkpoint": path})
    assert not model.training
    assert torch.equal(model.rpn_head.loc.head[3].weight, sd["rpn_head.loc.head.3.weight"])
    assert "siamrpn" in trackers.available_trackers()
    with pytest.raises(ValueError, match="unknown tracker"):
        trackers.build_tracker("nope", None)
