"""Command-line entry point for training.

    python train.py --tracker siamrpn [--config CFG] [--data ROOT] [--pretrained PYSOT.pth]
                    [--dhn DHN.pt] [--set key=value ...] [--resume RUN_DIR] [--name NAME]
    python train.py --dhn [--config configs/dhn.yaml] [--set key=value ...] [--resume RUN_DIR]

``--tracker siamrpn`` fine-tunes a SiamRPN with the DeepMOT loss (:mod:`deepmot.engine.deepmot_train`);
without ``--pretrained`` it first pre-trains the SOT on the same data. ``--dhn`` alone pre-trains
the Deep Hungarian Network (:mod:`deepmot.dhn.train`); beside ``--tracker`` it names the DHN
weights to use (default: the shipped ones). Under ``torchrun --nproc_per_node=K`` both train
data-parallel. With ``--resume`` the run directory's own ``config.yaml`` is the base. Only argument
parsing and wiring live here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one mode (``--tracker NAME`` or a bare ``--dhn``) and shared options."""
    p = argparse.ArgumentParser(
        description="Train deepmot models: DeepMOT fine-tuning of a tracker (--tracker siamrpn) or "
                    "DHN pre-training (--dhn).")
    p.add_argument("--tracker", choices=["siamrpn"], default=None,
                   help="fine-tune this tracker with the DeepMOT loss (the main job)")
    p.add_argument("--dhn", nargs="?", const=True, default=None, metavar="WEIGHTS",
                   help="alone: pre-train the Deep Hungarian Network; with --tracker: DHN weights to "
                        "use (default: the shipped deepmot/dhn/weights/dhn.pt)")
    p.add_argument("--config", default=None,
                   help="YAML config (default: configs/dhn.yaml for --dhn; for --tracker "
                        "configs/deepmot_siamrpn.yaml, or configs/deepmot_siamrpn_synthetic.yaml when "
                        "the built-in synthetic data is used)")
    p.add_argument("--data", default=None,
                   help="--tracker: MOT-format dataset root (default: data/MOT17 if present, else the "
                        "built-in synthetic set, generated once into data/synthetic)")
    p.add_argument("--pretrained", default=None,
                   help="--tracker: starting SiamRPN weights (PySOT / DaSiamRPN checkpoint); without "
                        "it SOT pre-training runs first")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=1e-3 (repeatable)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--name", default=None, help="run name (runs/<name>/<time>/)")
    return p


def _train_dhn(args: argparse.Namespace) -> None:
    from deepmot.config import load_config
    from deepmot.dhn.train import DHNTrainConfig, train_dhn

    overrides = list(args.overrides) + ([f"name={args.name}"] if args.name else [])
    if args.config is not None:
        path = args.config
    elif args.resume is not None:
        path = str(Path(args.resume) / "config.yaml")
    else:
        path = str(REPO / "configs" / "dhn.yaml")
    train_dhn(load_config(DHNTrainConfig, path, overrides), resume=args.resume)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config and start the selected training."""
    from deepmot.config import ConfigError
    from deepmot.errors import DataFormatError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tracker is None and args.dhn is not True:
        parser.error("choose what to train: --tracker siamrpn (DeepMOT fine-tuning) or --dhn "
                     "(DHN pre-training)")
    if args.tracker is None and (args.data is not None or args.pretrained is not None):
        parser.error("--data and --pretrained belong to --tracker; DHN pre-training makes its own data")
    for opt, value, need in (("--config", args.config, None), ("--resume", args.resume, "config.yaml")):
        if value is not None and not (Path(value) / need if need else Path(value)).is_file():
            parser.exit(2, f"{parser.prog}: error: {opt} {value}: " +
                        ("not a run directory (no config.yaml in it)\n" if need else "no such file\n"))
    try:
        if args.tracker is not None:
            from deepmot.engine.deepmot_cli import config_from_args
            from deepmot.engine.deepmot_train import run

            run(config_from_args(args), resume=args.resume)
        else:
            _train_dhn(args)
    except (ConfigError, DataFormatError, FileNotFoundError, FloatingPointError) as e:
        # a bad config file, option, --set value or input file, or weights gone NaN: one line
        lines = str(e).splitlines() or [type(e).__name__]
        more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
        parser.exit(2, f"{parser.prog}: error: {lines[0]}{more}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
