"""Command line of DeepMOT fine-tuning: arguments, config resolution, entry point.

``python -m deepmot.engine.deepmot_cli [--config CFG] [--data ROOT] [--pretrained W] [--dhn W]
[--set key=value ...] [--resume RUN_DIR] [--name NAME]`` is ``train.py --tracker siamrpn``
(it is also what ``torchrun`` starts in the tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepmot.config import load_config
from deepmot.engine.deepmot_train import DeepMOTTrainConfig, run

__all__ = ["build_parser", "default_config_path", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``train.py --tracker siamrpn`` (also ``python -m deepmot.engine.deepmot_cli``)."""
    p = argparse.ArgumentParser(description="DeepMOT fine-tuning of a SiamRPN tracker.")
    p.add_argument("--config", default=None, help="YAML config (default: configs/deepmot_siamrpn.yaml, "
                   "or configs/deepmot_siamrpn_synthetic.yaml when the synthetic set is used)")
    p.add_argument("--data", default=None, help="MOT-format dataset root (default: data/MOT17, else synthetic)")
    p.add_argument("--pretrained", default=None, help="PySOT / DaSiamRPN SiamRPN weights")
    p.add_argument("--dhn", default=None, help="DHN weights (default: the shipped ones)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--name", default=None, help="run name (runs/<name>/<time>/)")
    return p


def default_config_path(data: str | None) -> str | None:
    """The config used without ``--config``: the MOT17 recipe ``configs/deepmot_siamrpn.yaml``,
    or, when neither ``--data`` nor ``data/MOT17`` exists (the built-in synthetic set will be
    used), the CPU-sized ``configs/deepmot_siamrpn_synthetic.yaml``."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    synthetic = data is None and not Path("data/MOT17").is_dir()
    path = configs / ("deepmot_siamrpn_synthetic.yaml" if synthetic else "deepmot_siamrpn.yaml")
    return str(path) if path.is_file() else None


def config_from_args(args: argparse.Namespace) -> DeepMOTTrainConfig:
    """Resolve the config: the resumed run's config.yaml or ``--config`` (or the default file),
    then the CLI flags, then ``--set`` overrides."""
    overrides = []
    for key in ("data", "pretrained", "dhn", "name"):
        val = getattr(args, key, None)
        if isinstance(val, str):          # (train.py's bare ``--dhn`` mode flag is not a path)
            overrides.append(f"{key}={val}")
    overrides += list(getattr(args, "overrides", []) or [])
    if getattr(args, "resume", None) is not None and getattr(args, "config", None) is None:
        path: str | None = str(Path(args.resume) / "config.yaml")
    else:
        path = getattr(args, "config", None)
        if path is None:
            path = default_config_path(getattr(args, "data", None))
    return load_config(DeepMOTTrainConfig, path, overrides)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: parse, resolve the config, train."""
    args = build_parser().parse_args(argv)
    run(config_from_args(args), resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
