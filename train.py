"""Command-line entry point for training.

Three modes:

    python train.py --tracker siamrpn [--config CFG] [--data ROOT] [--pretrained PYSOT.pth]
                    [--dhn-weights DHN.pt] [--set key=value ...] [--resume RUN_DIR] [--name NAME]
    python train.py --dhn [--config configs/dhn.yaml] [--set key=value ...] [--resume RUN_DIR]
    python train.py --detector [--config configs/detector_*.yaml] [--data ROOT] [--set matcher=uot] [--resume RUN_DIR]

``--tracker NAME`` (a trainable tracker of the registry, :func:`trackers.trainable_trackers`)
fine-tunes it with the DeepMOT loss (:mod:`deepmot.engine.deepmot_train`); the SiamRPN without
``--pretrained`` first pre-trains the SOT on the same data; ``--tracker tracktor`` fine-tunes the
box-regression layer of the detector given with ``--pretrained`` (default: the shipped one) and,
with ``w_focal > 0`` (its configs' default), a new appearance head on the criterion's appearance branch.
``--dhn-weights`` names the frozen DHN inside the criterion (default: the shipped ones). ``--dhn``
pre-trains the Deep Hungarian Network (:mod:`deepmot.dhn.train`). Under
``torchrun --nproc_per_node=K`` or ``srun`` (SLURM) both train data-parallel; SIGTERM / SIGUSR1
write a checkpoint and exit (status 128 + signal) so that ``--resume`` continues exactly. With
``--resume`` the run directory's own ``config.yaml`` is the base. Only argument parsing and wiring live here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one mode (``--tracker NAME`` or ``--dhn``) and shared options."""
    from trackers import trainable_trackers

    p = argparse.ArgumentParser(
        description="Train deepmot models: DeepMOT fine-tuning of a tracker (--tracker siamrpn) or "
                    "DHN pre-training (--dhn).",
        epilog="Data-parallel under torchrun or SLURM's srun. SIGTERM / SIGUSR1 write a checkpoint and "
               "exit with status 128 + signal; --resume RUN_DIR then continues exactly.")
    p.add_argument("--tracker", choices=trainable_trackers(), default=None,
                   help="mode 1: fine-tune this tracker with the DeepMOT loss (the main job)")
    p.add_argument("--dhn", action="store_true",
                   help="mode 2: pre-train the Deep Hungarian Network")
    p.add_argument("--dhn-weights", default=None, metavar="PATH",
                   help="--tracker: DHN weights inside the DeepMOT criterion (default: the shipped "
                        "deepmot/dhn/weights/dhn.pt)")
    p.add_argument("--config", default=None,
                   help="YAML config (default: configs/dhn.yaml for --dhn; for --tracker NAME "
                        "configs/deepmot_NAME.yaml, or configs/deepmot_NAME_synthetic.yaml when "
                        "the built-in synthetic data is used)")
    p.add_argument("--data", default=None,
                   help="--tracker: MOT-format dataset root (default: data/MOT17 if present, else the "
                        "built-in synthetic set, generated once into data/synthetic)")
    p.add_argument("--pretrained", default=None,
                   help="--tracker: starting weights. siamrpn: a PySOT / DaSiamRPN checkpoint (without "
                        "it SOT pre-training runs first); tracktor: detector or Tracktor weights (default: "
                        "the shipped detector)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=1e-3 (repeatable)")
    p.add_argument("--detector", action="store_true",
                   help="train the pedestrian detector (trackers/detection; default config "
                        "configs/detector_tiny.yaml; --set matcher=NAME / cls_loss=NAME pick the box head's "
                        "matcher and loss; --pretrained: torchvision/Tracktor Faster R-CNN weights)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--name", default=None, help="run name (runs/<name>/<time>/)")
    return p


def default_config_path(data: str | None, tracker: str | None = None) -> str | None:
    """The DeepMOT config used without ``--config``: the MOT17 recipe
    ``configs/deepmot_<tracker>.yaml``, or, when neither ``--data`` nor ``data/MOT17`` exists (the
    built-in synthetic set will be used), the CPU-sized ``configs/deepmot_<tracker>_synthetic.yaml``
    (``<tracker>``: siamrpn unless ``--tracker`` names another; None when the file is absent)."""
    synthetic = data is None and not Path("data/MOT17").is_dir()
    name = tracker or "siamrpn"
    path = REPO / "configs" / (f"deepmot_{name}_synthetic.yaml" if synthetic else f"deepmot_{name}.yaml")
    return str(path) if path.is_file() else None


def config_from_args(args: argparse.Namespace):
    """The DeepMOT training config: the resumed run's config.yaml or ``--config`` (or the
    default file), then the CLI flags, then ``--set`` overrides."""
    from deepmot.config import load_config
    from deepmot.engine.deepmot_config import DeepMOTTrainConfig

    overrides = []
    for key, val in (("tracker", args.tracker), ("data", args.data), ("pretrained", args.pretrained),
                     ("dhn", args.dhn_weights), ("name", args.name)):
        if val is not None:
            overrides.append(f"{key}={val}")
    overrides += list(args.overrides)
    if args.resume is not None and args.config is None:
        path: str | None = str(Path(args.resume) / "config.yaml")
    else:
        path = args.config if args.config is not None else default_config_path(args.data, args.tracker)
    return load_config(DeepMOTTrainConfig, path, overrides)


def _train_deepmot(args: argparse.Namespace) -> None:
    from deepmot.config import ConfigError
    from deepmot.engine.deepmot_train import run
    from trackers import get_tracker

    cfg = config_from_args(args)
    try:
        plugin = get_tracker(cfg.tracker)
    except ValueError as e:  # "tracker: ..." set in the config file or with --set
        raise ConfigError(f"tracker: {e}") from None
    if plugin.build_trainable is None:
        raise ConfigError(f"tracker: {cfg.tracker!r} cannot be fine-tuned with DeepMOT")
    run(cfg, plugin.build_trainable, resume=args.resume, check_inputs=plugin.check_trainable)


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
    args, extra = parser.parse_known_args(argv)
    if args.dhn and extra and not extra[0].startswith("-"):   # the old "--tracker X --dhn PATH"
        parser.error(f"--dhn is the DHN pre-training mode; the DHN weights of the DeepMOT criterion "
                     f"are given with --dhn-weights (e.g. --tracker siamrpn --dhn-weights {extra[0]})")
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.detector:  # detector training lives in trackers/detection
        if args.tracker is not None or args.dhn:
            parser.error("--detector trains the detector alone; drop --tracker/--dhn")
        from trackers.detection.cli import train_main

        return train_main(args, parser)
    if args.tracker is not None and args.dhn:
        parser.error("choose one mode: --tracker NAME (DeepMOT fine-tuning) or --dhn (DHN pre-training)")
    if args.tracker is None and not args.dhn:
        parser.error("choose what to train: --tracker siamrpn (DeepMOT fine-tuning) or --dhn "
                     "(DHN pre-training)")
    if args.tracker is None and (args.data is not None or args.pretrained is not None
                                 or args.dhn_weights is not None):
        parser.error("--data, --pretrained and --dhn-weights belong to --tracker; DHN pre-training "
                     "makes its own data")
    for opt, value, need in (("--config", args.config, None), ("--resume", args.resume, "config.yaml")):
        if value is not None and not (Path(value) / need if need else Path(value)).is_file():
            parser.exit(2, f"{parser.prog}: error: {opt} {value}: " +
                        ("not a run directory (no config.yaml in it)\n" if need else "no such file\n"))
    try:
        if args.tracker is not None:
            _train_deepmot(args)
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
