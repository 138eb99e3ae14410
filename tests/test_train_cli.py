"""`train.py` wiring: one mode per call, flags reach the right config fields."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _entry():
    spec = importlib.util.spec_from_file_location("train_entry_cli", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tracker_mode_passes_flags_to_the_deepmot_config(monkeypatch, tmp_path):
    import deepmot.engine.deepmot_train as dt

    seen = {}
    monkeypatch.setattr(dt, "run", lambda cfg, build, resume=None, check_inputs=None: seen.update(
        cfg=cfg, build=build, resume=resume, check=check_inputs))
    rc = _entry().main(["--tracker", "siamrpn", "--dhn-weights", "my_dhn.pt", "--data", str(tmp_path),
                        "--pretrained", "pysot.pth", "--name", "exp", "--set", "seed=7"])
    assert rc == 0 and seen["resume"] is None
    cfg = seen["cfg"]
    assert (cfg.dhn, cfg.data, cfg.pretrained, cfg.name, cfg.seed) == ("my_dhn.pt", str(tmp_path), "pysot.pth",
                                                                         "exp", 7)
    from trackers import get_tracker

    assert cfg.tracker == "siamrpn" and seen["build"] is get_tracker("siamrpn").build_trainable
    assert seen["check"] is get_tracker("siamrpn").check_trainable   # the tracker's preflight checks


def test_mode_errors_are_clear(capsys):
    entry = _entry()
    with pytest.raises(SystemExit) as e:
        entry.main([])
    assert e.value.code == 2 and "--tracker siamrpn" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        entry.main(["--dhn", "--data", "somewhere"])
    assert "belong to --tracker" in capsys.readouterr().err
    with pytest.raises(SystemExit):           # the old form: --dhn naming the criterion's weights
        entry.main(["--tracker", "siamrpn", "--dhn", "my_dhn.pt"])
    assert "--dhn-weights my_dhn.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        entry.main(["--tracker", "siamrpn", "--dhn"])
    assert "choose one mode" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        entry.main(["--tracker", "no_such_tracker"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--dhn", "--set", "bogus=1"], "unknown config key(s) bogus"),
    (["--dhn", "--set", "class_balance=2"], "class_balance: 2.0 is out of range (must be >= 0 and <= 1)"),
    (["--tracker", "siamrpn", "--set", "bogus=1"], "unknown config key(s) bogus"),
])
def test_config_errors_are_one_line_not_a_traceback(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _entry().main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and "Traceback" not in err
