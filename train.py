"""Command-line entry point for training.

    python train.py --dhn [--config configs/dhn.yaml] [--set key=value ...] [--resume RUN_DIR] [--name NAME]

``--dhn`` pre-trains the Deep Hungarian Network (:mod:`deepmot.dhn.train`). Under
``torchrun --nproc_per_node=K train.py --dhn ...`` it trains data-parallel. With ``--resume``
the run directory's own ``config.yaml`` is the base, then ``--config``/``--set`` apply on top.
Only argument parsing and wiring live here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one mode flag per trainable thing)."""
    p = argparse.ArgumentParser(description="Train deepmot models.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dhn", action="store_true", help="pre-train the Deep Hungarian Network")
    p.add_argument("--config", default=None, help="YAML config file (default: configs/dhn.yaml for --dhn)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=1e-3 (repeatable)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--name", default=None, help="run name (runs/<name>/<time>/)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config and start the selected training."""
    args = build_parser().parse_args(argv)
    from deepmot.config import load_config

    if args.dhn:
        from deepmot.dhn.train import DHNTrainConfig, train_dhn

        overrides = list(args.overrides) + ([f"name={args.name}"] if args.name else [])
        if args.resume is not None:
            base = Path(args.resume) / "config.yaml"
            cfg = load_config(DHNTrainConfig, base, overrides)
            if args.config is not None:
                cfg = load_config(DHNTrainConfig, args.config, overrides)
        else:
            path = args.config if args.config is not None else "configs/dhn.yaml"
            cfg = load_config(DHNTrainConfig, path if Path(path).is_file() or args.config else None,
                              overrides)
        train_dhn(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
