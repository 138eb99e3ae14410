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
