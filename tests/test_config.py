"""Typed configs: YAML + overrides, types checked, unknown keys rejected, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from deepmot.config import ConfigError, config_to_dict, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    name: str = "x"
    steps: int = 10
    dhn: str | None = None
    sizes: list[int] = field(default_factory=lambda: [5, 10])
    optim: Optim = field(default_factory=Optim)


def test_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\noptim:\n  lr: 0.01\n")
    cfg = load_config(Cfg, p, ["optim.lr=2", "dhn=w.pt", "sizes=[1, 2, 3]", "name=run"])
    assert cfg.steps == 20
    assert cfg.optim.lr == 2.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.9, 0.999)  # untouched nested default survives a partial section
    assert cfg.dhn == "w.pt" and cfg.sizes == [1, 2, 3] and cfg.name == "run"
    assert load_config(Cfg, None, ["optim.lr=7e-4"]).optim.lr == 7e-4  # YAML 1.1 reads this as a string


def test_unknown_key_and_bad_type_are_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(Cfg, p)
    with pytest.raises(ConfigError, match="steps"):
        load_config(Cfg, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["steps"])
    with pytest.raises(FileNotFoundError):
        load_config(Cfg, tmp_path / "missing.yaml")


def test_save_load_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["steps=7", "optim.betas=[0.5, 0.6]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Cfg, tmp_path / "config.yaml")
    assert again == cfg
    assert config_to_dict(again)["optim"] == {"lr": 1e-3, "betas": [0.5, 0.6]}


@dataclass
class Scores:
    patience: int = 3
    scores: dict[str, list[float]] = field(default_factory=lambda: {"DPM": [0.0, 0.3], "SDP": [0.0, 0.5]})


@dataclass
class WithMaps:
    mot: Scores = field(default_factory=Scores)
    tags: dict[str, int] = field(default_factory=lambda: {"a": 1, "b": 2})
    extra: dict[str, int] | None = None


def test_dotted_override_merges_into_a_mapping(tmp_path):
    cfg = load_config(WithMaps, None, ["mot.scores.SDP=[0.1, 0.6]", "mot.scores.FRCNN=[0, 0.5]", "tags.b=5"])
    assert cfg.mot.scores == {"DPM": [0.0, 0.3], "SDP": [0.1, 0.6], "FRCNN": [0, 0.5]}
    assert cfg.tags == {"a": 1, "b": 5}
    assert WithMaps().mot.scores == {"DPM": [0.0, 0.3], "SDP": [0.0, 0.5]}  # defaults not mutated
    p = tmp_path / "c.yaml"
    p.write_text("mot:\n  patience: 9\n")  # the file sets the section but not the mapping
    cfg = load_config(WithMaps, p, ["mot.scores.SDP=[0.2, 0.7]"])
    assert cfg.mot.patience == 9 and cfg.mot.scores == {"DPM": [0.0, 0.3], "SDP": [0.2, 0.7]}
    p.write_text("mot:\n  scores:\n    X: [1, 2]\n")  # a mapping written in the file replaces the default...
    assert load_config(WithMaps, p).mot.scores == {"X": [1, 2]}
    assert load_config(WithMaps, p, ["mot.scores.Y=[3, 4]"]).mot.scores == {"X": [1, 2], "Y": [3, 4]}  # ...and merges
    # setting the field itself replaces the mapping; an unset optional mapping starts empty
    assert load_config(WithMaps, None, ["mot.scores={Z: [0, 1]}"]).mot.scores == {"Z": [0, 1]}
    assert load_config(WithMaps, None, ["extra.k=4"]).extra == {"k": 4}
    with pytest.raises(ConfigError, match="patience"):
        load_config(WithMaps, None, ["mot.patience.x=1"])
    with pytest.raises(ConfigError, match=r"mot\.scorez"):
        load_config(WithMaps, None, ["mot.scorez.SDP=1"])


def test_detector_score_override_keeps_other_detectors(tmp_path):
    """The case that motivated merging: one detector's thresholds from the command line."""
    from trackers.multi_config import InferenceFileConfig

    default = InferenceFileConfig().mot.detector_scores
    for path in (None, tmp_path / "empty.yaml"):
        if path is not None:
            path.write_text("device: cpu\n")
        cfg = load_config(InferenceFileConfig, path, ["mot.detector_scores.FRCNN=[0.0, 0.6]"])
        assert cfg.mot.detector_scores == {**default, "FRCNN": [0.0, 0.6]}
        assert cfg.mot.scores_for("FRCNN") == (0.0, 0.6) and cfg.mot.scores_for("DPM") == tuple(default["DPM"])
