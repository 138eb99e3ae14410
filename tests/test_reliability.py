"""Bad input and faults end in one clear line; one bad sequence never stops the others; nothing is lost.

The table of issue #20: every bad option, file or value of ``train.py`` ends in exit 2 with one
``train.py: error:`` line on stderr naming it, no traceback and no run directory; evaluation
faults fail only their own sequence (exit 1, one stderr line naming the file) and leave the other
sequences' numbers equal to a clean run; damaged checkpoints and leftovers of killed writes are
handled on resume. No case trains more than a few DHN steps.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepmot.config import ConfigError, Range, load_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread", "quiet_machine")


@pytest.fixture()
def quiet_machine(monkeypatch):
    """A load average of 0: the "machine busy" warning (stderr) depends on other processes, and
    these tests count stderr lines; the warning itself is tested in test_user_output.py."""
    monkeypatch.setattr("deepmot.machine.load_average", lambda: 0.0)


def _entry(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_entry_reliability", REPO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def train_entry():
    return _entry("train")


@pytest.fixture(scope="module")
def evaluate_entry():
    return _entry("evaluate")


# --------------------------------------------------------------------------- inputs of the table
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixtures_dir) -> Path:
    """A folder of bad inputs plus ``D``, a data root of the MOT17-09 annotations (no images)."""
    base = tmp_path_factory.mktemp("inputs")
    shutil.copytree(fixtures_dir / "mot17" / "train", base / "D" / "train")
    (base / "empty").mkdir()
    (base / "text.pth").write_text("hello\n")
    (base / "random.pth").write_bytes(bytes(range(256)) * 20)
    torch.save({"a": [1, 2, "x"]}, base / "foreign.pth")
    torch.save({"model": {"w": torch.zeros(3)}}, base / "wrong_dhn.pt")
    import pickle
    from collections import Counter

    (base / "pickle.pth").write_bytes(pickle.dumps(Counter(a=1)))
    (base / "bad.yaml").write_text("lr: [1,\n")
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    return base


T = ["--tracker", "siamrpn", "--data", "{D}", "--set", "model=siamrpn_alex_tiny"]
DHN = ["--dhn"]

#: (id, argv, words the error line must contain)
TRAIN_CASES = [
    # out-of-range / non-finite values (DHN pre-training)
    ("dhn-checkpoint_every=0", DHN + ["--set", "checkpoint_every=0"], ["checkpoint_every", ">= 1"]),
    ("dhn-yaml-syntax", DHN + ["--set", "lr=[1,"], ["lr=[1,", "YAML"]),
    ("dhn-max_size=0", DHN + ["--set", "data.max_size=0"], ["data.max_size"]),
    ("dhn-unknown-key", DHN + ["--set", "max_size=0"], ["unknown config key", "max_size"]),
    ("dhn-val_count=0", DHN + ["--set", "val_count=0"], ["val_count"]),
    ("dhn-hidden_size=0", DHN + ["--set", "model.hidden_size=0"], ["model.hidden_size"]),
    ("dhn-lr=-1", DHN + ["--set", "lr=-1"], ["lr", "> 0"]),
    ("dhn-lr=nan", DHN + ["--set", "lr=nan"], ["lr", "finite"]),
    ("dhn-grad_clip=nan", DHN + ["--set", "grad_clip=.nan"], ["grad_clip", "finite"]),
    ("dhn-steps=-5", DHN + ["--set", "steps=-5"], ["steps"]),
    ("dhn-wrong-type", DHN + ["--set", "steps=many"], ["steps", "integer"]),
    ("dhn-head_activation", DHN + ["--set", "model.head_activation=tanh"], ["model.head_activation", "tanh"]),
    ("dhn-device=cuda", DHN + ["--set", "device=cuda"], ["device", "CUDA"]),
    ("dhn-device=banana", DHN + ["--set", "device=banana"], ["device", "banana"]),
    # --config / --resume
    ("config-missing", DHN + ["--config", "{base}/nothing.yaml"], ["--config", "nothing.yaml"]),
    ("config-folder", DHN + ["--config", "{base}/empty"], ["--config", "empty"]),
    ("config-bad-yaml", DHN + ["--config", "{base}/bad.yaml"], ["bad.yaml", "YAML"]),
    ("config-not-mapping", DHN + ["--config", "{base}/list.yaml"], ["list.yaml", "mapping"]),
    ("config-not-utf8", DHN + ["--config", "{base}/latin1.yaml"], ["latin1.yaml", "UTF-8"]),
    ("resume-missing", DHN + ["--resume", "{base}/nothing"], ["--resume", "nothing"]),
    ("resume-empty-folder", DHN + ["--resume", "{base}/empty"], ["--resume", "empty"]),
    ("tracker-resume-empty", T + ["--resume", "{base}/empty"], ["--resume", "empty"]),
    # tracker mode: data, weights, values
    ("data-missing", ["--tracker", "siamrpn", "--data", "{base}/nothing"], ["nothing", "--data"]),
    ("data-empty", ["--tracker", "siamrpn", "--data", "{base}/empty"], ["empty", "no sequence"]),
    ("pretrained-missing", T + ["--pretrained", "{base}/nothing.pth"], ["--pretrained", "nothing.pth"]),
    ("pretrained-text", T + ["--pretrained", "{base}/text.pth"], ["--pretrained", "text.pth"]),
    ("pretrained-random", T + ["--pretrained", "{base}/random.pth"], ["--pretrained", "random.pth"]),
    ("pretrained-foreign", T + ["--pretrained", "{base}/foreign.pth"], ["--pretrained", "foreign.pth"]),
    ("pretrained-pickle", T + ["--pretrained", "{base}/pickle.pth"], ["--pretrained", "pickle.pth"]),
    ("pretrained-wrong-model", T + ["--pretrained", "{base}/wrong_dhn.pt"], ["--pretrained", "does not fit"]),
    ("dhn-wrong-model", T + ["--dhn-weights", "{base}/wrong_dhn.pt"], ["--dhn-weights", "wrong_dhn.pt"]),
    ("dhn-random", T + ["--dhn-weights", "{base}/random.pth"], ["--dhn-weights", "random.pth"]),
    ("dhn-missing", T + ["--dhn-weights", "{base}/nothing.pt"], ["--dhn-weights", "nothing.pt"]),
    ("temperature=0", T + ["--set", "temperature=0"], ["temperature"]),
    ("loss-weights-0", T + ["--set", "w_mota=0", "--set", "w_motp=0", "--set", "w_focal=0"], ["at least one"]),
    ("seq_len=0", T + ["--set", "seq_len=0"], ["seq_len", ">= 2"]),
    ("ids_mode", T + ["--set", "ids_mode=foo"], ["ids_mode", "foo"]),
    ("model-unknown", T + ["--set", "model=foo"], ["model", "foo"]),
    ("delta=nan", T + ["--set", "delta=nan"], ["delta", "finite"]),
    ("iou_threshold=nan", T + ["--set", "iou_threshold=.nan"], ["iou_threshold", "finite"]),
    ("grad_clip=nan", T + ["--set", "grad_clip=nan"], ["grad_clip", "finite"]),
    ("max_steps=-5", T + ["--set", "max_steps=-5"], ["max_steps"]),
    ("lr=-1", T + ["--set", "lr=-1"], ["lr"]),
    ("pretrain-override", T + ["--set", "pretrain=[steps=0]"], ["pretrain", "steps"]),
    ("mot-override", T + ["--set", "validation.mot=[match_iou=2]"], ["validation.mot", "match_iou"]),
    ("model-override", T + ["--set", "model_overrides=[anchor_stride=0]"], ["anchor_stride"]),
    ("augment-range", T + ["--set", "augment.scale_range=[1.2,0.8]"], ["scale_range"]),
]


@pytest.mark.parametrize("argv, words", [pytest.param(*c[1:], id=c[0]) for c in TRAIN_CASES])
def test_train_errors_are_one_line_exit_2_before_a_run_directory(argv, words, inputs, train_entry, tmp_path,
                                                                 monkeypatch, capsys):
    if "device=cuda" in argv and torch.cuda.is_available():
        pytest.skip("this case needs a machine without CUDA")
    monkeypatch.chdir(tmp_path)  # runs/ would appear here
    monkeypatch.setattr("sys.argv", ["train.py"])  # the program name argparse prints
    argv = [a.format(base=inputs, D=inputs / "D") for a in argv]
    with pytest.raises(SystemExit) as e:
        train_entry.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "runs").exists() and not any((tmp_path).iterdir())


# --------------------------------------------------------------------------- numeric config fields
def _config_classes():
    from deepmot.dhn.train import DHNTrainConfig
    from deepmot.engine.deepmot_config import DeepMOTTrainConfig
    from trackers.multi_config import InferenceFileConfig
    from trackers.siamrpn.config import SiamRPNConfig
    from trackers.siamrpn.pretrain import PretrainConfig

    return [DHNTrainConfig, DeepMOTTrainConfig, PretrainConfig, InferenceFileConfig, SiamRPNConfig]


def _numeric_fields(cls, prefix=""):
    """``(class, dotted key, base type, Range or None)`` of every int/float field, nested included."""
    import dataclasses

    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, type(int | None)):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
        rng = None
        if typing.get_origin(tp) is typing.Annotated:
            tp, *extras = typing.get_args(tp)
            rng = next((x for x in extras if isinstance(x, Range)), None)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += _numeric_fields(tp, f"{prefix}{f.name}.")
        elif tp in (int, float):
            out.append((f"{prefix}{f.name}", tp, rng))
    return out


FIELDS = [(cls, key, tp, rng) for cls in _config_classes() for key, tp, rng in _numeric_fields(cls)]


def test_numeric_fields_are_bounded_where_a_bound_exists():
    """Every count, size, step and rate in the configs declares its range (scores may be any number)."""
    unbounded = sorted(f"{cls.__name__}.{key}" for cls, key, tp, rng in FIELDS if rng is None)
    assert unbounded == ["InferenceFileConfig.mot.birth_score", "InferenceFileConfig.mot.coast_score",
                         "InferenceFileConfig.mot.min_score"]
    assert len(FIELDS) > 100


def _outside(rng: Range, tp, draw) -> float | int:
    """A value that violates ``rng``."""
    sides = []
    if rng.ge is not None:
        sides.append(rng.ge - draw(st.integers(1, 10**6)) * (1 if tp is int else draw(st.floats(1e-6, 1.0))))
    if rng.gt is not None:
        sides.append(rng.gt - (draw(st.integers(0, 10**6)) if tp is int else draw(st.floats(0.0, 1e6))))
    if rng.le is not None:
        sides.append(rng.le + draw(st.integers(1, 10**6)) * (1 if tp is int else draw(st.floats(1e-6, 1.0))))
    if rng.lt is not None:
        sides.append(rng.lt + (draw(st.integers(0, 10**6)) if tp is int else draw(st.floats(0.0, 1e6))))
    v = draw(st.sampled_from(sides))
    return int(v) if tp is int else float(v)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_non_finite_or_out_of_range_numeric_value_is_refused_in_one_line(data):
    cls, key, tp, rng = data.draw(st.sampled_from(FIELDS), label="field")
    if tp is float and (rng is None or data.draw(st.booleans())):
        text = data.draw(st.sampled_from([".nan", "nan", ".inf", "-.inf", "inf", "-inf", "1e999"]))
    elif rng is not None:
        text = repr(_outside(rng, tp, data.draw))
    else:
        return  # an int without bounds: every integer is valid
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, [f"{key}={text}"])
    msg = str(e.value)
    assert "\n" not in msg and key in msg, msg


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_in_range_values_are_accepted_or_refused_by_a_cross_field_rule(data):
    cls, key, tp, rng = data.draw(st.sampled_from(FIELDS), label="field")
    lo = rng.ge if rng is not None and rng.ge is not None else (rng.gt if rng is not None else None)
    hi = rng.le if rng is not None and rng.le is not None else (rng.lt if rng is not None else None)
    lo, hi = (lo if lo is not None else -1e6), (hi if hi is not None else 1e6)
    if tp is int:
        v = data.draw(st.integers(math.ceil(lo) + (rng is not None and rng.gt is not None),
                                  math.floor(hi) - (rng is not None and rng.lt is not None)))
    else:
        v = data.draw(st.floats(lo, hi, exclude_min=rng is not None and rng.gt is not None,
                                exclude_max=rng is not None and rng.lt is not None))
    try:
        cfg = load_config(cls, None, [f"{key}={v!r}"])
    except ConfigError as e:
        assert "out of range" not in str(e) and "finite" not in str(e), str(e)
        return
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == v


# --------------------------------------------------------------------------- evaluation faults
def _results_and_data(fixtures_dir, tmp_path) -> tuple[Path, Path]:
    res = tmp_path / "R"
    shutil.copytree(fixtures_dir / "mot17" / "results" / "Lif_T", res)
    data = tmp_path / "D"
    shutil.copytree(fixtures_dir / "mot17" / "train", data / "train")
    return res, data


def _evaluate(entry, res: Path, data: Path, out: Path, *extra) -> int:
    return entry.main(["--results", str(res), "--data", str(data), "--out", str(out), "--no-hota", *extra])


@pytest.fixture(scope="module")
def clean_run(evaluate_entry, fixtures_dir, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("clean")
    res, data = _results_and_data(fixtures_dir, tmp)
    assert _evaluate(evaluate_entry, res, data, tmp / "out") == 0
    return json.loads((tmp / "out" / "summary.json").read_text())["sequences"]


def _break_seqinfo(res: Path, data: Path) -> str:
    ini = data / "train" / "MOT17-09-DPM" / "seqinfo.ini"
    ini.write_text("".join(line for line in ini.read_text().splitlines(True) if "seqLength" not in line))
    return "seqinfo.ini"


def _remove_result(res: Path, data: Path) -> str:
    (res / "MOT17-09-DPM.txt").unlink()
    return "MOT17-09-DPM.txt"


def _bad_result_line(res: Path, data: Path) -> str:
    p = res / "MOT17-09-DPM.txt"
    lines = p.read_text().splitlines(True)
    lines[6] = "1,2,3\n"
    p.write_text("".join(lines))
    return "MOT17-09-DPM.txt:7"


def _bad_gt_line(res: Path, data: Path) -> str:
    p = data / "train" / "MOT17-09-DPM" / "gt" / "gt.txt"
    lines = p.read_text().splitlines(True)
    lines[2] = lines[2].replace(",", ",x", 1)
    p.write_text("".join(lines))
    return "gt.txt:3"


@pytest.mark.parametrize("fault", [_break_seqinfo, _remove_result, _bad_result_line, _bad_gt_line],
                         ids=["broken-seqinfo", "missing-result-file", "bad-result-line", "bad-gt-line"])
def test_a_bad_sequence_fails_alone_others_equal_a_clean_run(fault, evaluate_entry, fixtures_dir, clean_run,
                                                            tmp_path, capsys):
    res, data = _results_and_data(fixtures_dir, tmp_path)
    names = fault(res, data)
    rc = _evaluate(evaluate_entry, res, data, tmp_path / "out")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "MOT17-09-DPM" in lines[0] and names in lines[0], err
    assert "Traceback" not in err
    got = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(got["sequences"]) == {"MOT17-09-FRCNN", "MOT17-09-SDP"}
    for name, metrics in got["sequences"].items():
        assert metrics == clean_run[name]


def test_naming_the_sequences_evaluates_only_those(evaluate_entry, fixtures_dir, clean_run, tmp_path, capsys):
    res, data = _results_and_data(fixtures_dir, tmp_path)
    _remove_result(res, data)
    rc = _evaluate(evaluate_entry, res, data, tmp_path / "out", "--seqs", "MOT17-09-FRCNN", "MOT17-09-SDP")
    assert rc == 0 and capsys.readouterr().err == ""


def _strict_json(path: Path) -> dict:
    def refuse(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_empty_results_and_zero_gt_give_strict_json_and_combined_motp(evaluate_entry, fixtures_dir, clean_run,
                                                                       tmp_path, capsys):
    res, data = _results_and_data(fixtures_dir, tmp_path)
    (res / "MOT17-09-DPM.txt").write_text("")                                  # no match at all
    (data / "train" / "MOT17-09-SDP" / "gt" / "gt.txt").write_text("")         # no GT at all
    rc = _evaluate(evaluate_entry, res, data, tmp_path / "out")
    out = capsys.readouterr().out
    assert rc == 0
    got = _strict_json(tmp_path / "out" / "summary.json")
    seqs, comb = got["sequences"], got["combined"]
    assert seqs["MOT17-09-DPM"]["MOTP_dist"] is None and seqs["MOT17-09-SDP"]["MOTP_dist"] is None
    assert seqs["MOT17-09-FRCNN"] == clean_run["MOT17-09-FRCNN"]
    # COMBINED MOTP_dist: the one sequence with matches decides it (motmetrics' formula gave NaN)
    assert comb["MOTP_dist"] == pytest.approx(clean_run["MOT17-09-FRCNN"]["MOTP_dist"], rel=1e-12)
    # a 0-GT sequence: TrackEval's MOTA = -FP, and the report says why
    assert seqs["MOT17-09-SDP"]["MOTA"] == -seqs["MOT17-09-SDP"]["FP"]
    assert "no GT objects in MOT17-09-SDP" in out


def test_ids_beyond_2_31_evaluate_like_small_ids(evaluate_entry, fixtures_dir, clean_run, tmp_path):
    res, data = _results_and_data(fixtures_dir, tmp_path)
    p = res / "MOT17-09-DPM.txt"
    rows = [line.split(",") for line in p.read_text().splitlines()]
    p.write_text("".join(",".join([r[0], str(int(float(r[1])) + 2**40)] + r[2:]) + "\n" for r in rows))
    assert _evaluate(evaluate_entry, res, data, tmp_path / "out") == 0
    got = json.loads((tmp_path / "out" / "summary.json").read_text())["sequences"]
    assert got == clean_run


# --------------------------------------------------------------------------- checkpoints
TINY_DHN = ["--dhn", "--set", "steps=2", "--set", "checkpoint_every=1", "--set", "val_every=1",
            "--set", "val_count=4", "--set", "model.hidden_size=4", "--set", "model.head_dims=[4,4]",
            "--set", "data.max_size=4", "--set", "log_every=1", "--set", "num_threads=1"]


@pytest.fixture()
def dhn_run(train_entry, tmp_path, monkeypatch) -> Path:
    """A finished 2-step DHN run (last.pt and best.pt) in ``tmp_path/runs``."""
    monkeypatch.chdir(tmp_path)
    assert train_entry.main(TINY_DHN) == 0
    (run,) = (tmp_path / "runs" / "dhn").iterdir()
    return run


def test_damaged_last_pt_resumes_from_best_pt_and_says_so(dhn_run, train_entry, capsys):
    ck = dhn_run / "checkpoints"
    (ck / "last.pt").write_bytes((ck / "last.pt").read_bytes()[:4000])        # truncated by a crash
    (ck / ".last.pt.x1y2z3.tmp").write_bytes(b"\0" * 1000)                     # a killed write
    capsys.readouterr()
    assert train_entry.main(["--dhn", "--resume", str(dhn_run), "--set", "steps=3"]) == 0
    err = capsys.readouterr().err
    assert "last.pt" in err and "damaged" in err and "best.pt" in err and "Traceback" not in err
    assert not (ck / ".last.pt.x1y2z3.tmp").exists() and ".last.pt.x1y2z3.tmp" in err
    from deepmot.runtime.checkpoint import load_checkpoint

    assert load_checkpoint(ck / "last.pt")["step"] == 3


def test_no_loadable_checkpoint_stops_with_one_line(dhn_run, train_entry, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])
    ck = dhn_run / "checkpoints"
    for name in ("last.pt", "best.pt"):
        (ck / name).write_bytes(b"not a checkpoint")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_entry.main(["--dhn", "--resume", str(dhn_run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and "last.pt" in last and "best.pt" in last


def test_non_finite_weights_are_never_written(tmp_path):
    from deepmot.runtime.checkpoint import save_checkpoint

    state = {"model": {"w": torch.tensor([1.0, float("nan")])}, "step": 1}
    with pytest.raises(FloatingPointError, match="w holds 1 NaN/inf"):
        save_checkpoint(tmp_path / "last.pt", state)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- criterion and matchers
@pytest.mark.parametrize("kwargs, says", [
    ({"delta": float("nan")}, "delta=nan"), ({"w_motp": float("inf")}, "w_motp=inf"),
    ({"iou_threshold": float("nan")}, "iou_threshold=nan"), ({"temperature": 0.0}, "temperature=0"),
])
def test_criterion_refuses_bad_hyper_parameters(kwargs, says):
    from deepmot.criterion import DeepMOTLoss

    with pytest.raises(ValueError, match=says):
        DeepMOTLoss(lambda d: torch.sigmoid(-d), **kwargs)


ZERO = [[10.0, 10.0, 10.0, 10.0]]
OK = [[0.0, 0.0, 20.0, 20.0]]


@pytest.mark.parametrize("track, gt, size, says", [
    (ZERO, ZERO, (100, 100), "IoU is undefined"),
    ([[20.0, 20.0, 10.0, 10.0]], [[10.0, 10.0, 20.0, 20.0]], (100, 100), None),
    ([[20.0, 0.0, 0.0, 20.0]], OK, (100, 100), "IoU is undefined"),
    (OK, [[5.0, 30.0, 9.0, 10.0]], (100, 100), "gt box 0 is inverted"),
    (OK, OK, (0, 0), "image_size"),
    (OK, OK, (float("nan"), 10), "image_size"),
    ([[0.0, float("nan"), 1.0, 1.0]], OK, (100, 100), "NaN"),
])
def test_criterion_names_the_real_cause_of_degenerate_input(track, gt, size, says):
    from deepmot.criterion import DeepMOTLoss

    loss = DeepMOTLoss(lambda d: torch.sigmoid(-d))
    if says is None:  # an inverted track box with a defined IoU is scored (as motmetrics scores it)
        assert torch.isfinite(loss(torch.tensor(track), [1], torch.tensor(gt), [1], size).loss)
        return
    with pytest.raises(ValueError, match=says) as e:
        loss(torch.tensor(track), [1], torch.tensor(gt), [1], size)
    assert "gating" not in str(e.value) and "gate" not in str(e.value)  # never blamed on gating


def test_criterion_accepts_a_zero_area_box_on_one_side():
    from deepmot.criterion import DeepMOTLoss

    out = DeepMOTLoss(lambda d: torch.sigmoid(-d))(torch.tensor(ZERO), [1], torch.tensor(OK), [1], (100, 100))
    assert torch.isfinite(out.loss)


def test_deta_stage2_refuses_an_infinite_box():
    from deepmot.matching import IoUAssigner, MatchInput

    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, float("inf"), 0.1]]])
    inp = MatchInput(pred_logits=torch.zeros(1, 2, 1), pred_boxes=pred,
                     gt_boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]), gt_labels=torch.zeros(1, 1, dtype=torch.long),
                     gt_mask=torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pred_boxes\[0, 1\] is not finite"):
        IoUAssigner.deta_stage2(num_queries=2)(inp)


@pytest.mark.slow
def test_tracker_mode_runs_the_other_sequences_when_one_seqinfo_is_broken(evaluate_entry, tmp_path, capsys):
    from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic
    from trackers.siamrpn import build_siamrpn

    root = tmp_path / "synth"
    generate_synthetic(root, SyntheticConfig(seed=3, num_train=0, num_test=1, min_frames=6, max_frames=6,
                                             width=160, height=112, min_objects=2, max_objects=2,
                                             static_persons=0, reflections=0))
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), weights)
    common = ["--data", str(root), "--checkpoint", str(weights), "--set", "mot.birth_wait=1", "--device", "cpu",
              "--no-hota", "--threads", "1"]
    assert evaluate_entry.main(common + ["--out", str(tmp_path / "clean")]) == 0
    clean = json.loads((tmp_path / "clean" / "summary.json").read_text())["sequences"]
    (seq_dir,) = [p for p in (root / "test").iterdir() if p.name.endswith("-DPM")]
    ini = seq_dir / "seqinfo.ini"
    ini.write_text(ini.read_text().replace("imWidth", "imWidht"))
    capsys.readouterr()
    assert evaluate_entry.main(common + ["--out", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and seq_dir.name in err[0] and "seqinfo.ini" in err[0] and "imWidth" in err[0]
    got = json.loads((tmp_path / "bad" / "summary.json").read_text())["sequences"]
    assert len(clean) == 3 and set(got) == set(clean) - {seq_dir.name}
    for name, metrics in got.items():
        assert metrics == clean[name]
