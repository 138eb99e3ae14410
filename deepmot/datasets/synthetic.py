"""Built-in synthetic MOT17: a small, deterministic dataset in the MOT17 layout.

``python -m deepmot.datasets.synthetic --out DIR`` writes ``DIR/train``, ``DIR/val`` and ``DIR/test``
with ``MOT17-XX-{DPM,FRCNN,SDP}/`` folders (``img1/`` JPEGs, ``seqinfo.ini``, ``gt/gt.txt``,
``det/det.txt``) and ``DIR/seqmaps/MOT17-{train,val,test}.txt``. The ``val`` split (numbered
``MOT17-91``, ``-92``, ...) has its own random stream: training loops choose on it, and the test
split stays unseen until a final report. Scenes: person-like figures with
confusable per-identity appearances that enter and leave, change speed and direction, cross and
occlude each other (visibility from the depth order), over a textured, slowly panning backdrop;
distractor GT rows (static persons: class 7, reflections: class 12, both flag 0) and three
detector flavours with different miss, false-alarm, jitter and score profiles.

Unlike real MOT17, test sequences also get ``gt/gt.txt`` (switch off with ``--no-test-gt``), so
held-out scores can be computed. The three variant folders of a sequence share their images via
hard links (copies where the file system refuses links).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from deepmot.datasets.mot import SeqInfo, write_detections, write_gt, write_seqinfo
from deepmot.datasets.scene import gt_rows, inside_fraction, person_height, render_frame, simulate
from deepmot.errors import MissingDataError

__all__ = [
    "SyntheticConfig",
    "DetectorProfile",
    "DETECTOR_PROFILES",
    "generate_synthetic",
    "resolve_data_root",
    "main",
]

MARKER = "synthetic.json"
_FORMAT_VERSION = 1
_TRAIN_NUMBERS = (2, 4, 5, 9, 10, 11, 13)
_TEST_NUMBERS = (1, 3, 6, 7, 8, 12, 14)
_VAL_FIRST_NUMBER = 91


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic set (the CLI exposes each one as ``--name``)."""

    seed: int = 0
    num_train: int = 6
    num_test: int = 3
    num_val: int = 3
    width: int = 640
    height: int = 360
    min_frames: int = 100
    max_frames: int = 200
    min_objects: int = 4
    max_objects: int = 15
    static_persons: int = 2
    reflections: int = 1
    camera_pan: float = 0.8
    frame_rate: int = 30
    jpeg_quality: int = 90
    test_gt: bool = True

    def __post_init__(self) -> None:
        checks = [
            (min(self.num_train, self.num_test, self.num_val) >= 0, "num_train/num_test/num_val must be >= 0"),
            (self.width >= 64 and self.height >= 64, "width and height must be >= 64"),
            (1 <= self.min_frames <= self.max_frames, "need 1 <= min_frames <= max_frames"),
            (1 <= self.min_objects <= self.max_objects, "need 1 <= min_objects <= max_objects"),
            (self.static_persons >= 0 and self.reflections >= 0, "static_persons/reflections must be >= 0"),
            (self.camera_pan >= 0, "camera_pan must be >= 0"),
            (self.frame_rate > 0, "frame_rate must be > 0"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {msg}")


_HELP = {
    "seed": "random seed; the whole dataset is a deterministic function of the knobs",
    "num_train": "number of training sequences (each written in the -DPM/-FRCNN/-SDP variants)",
    "num_test": "number of test sequences",
    "num_val": "number of validation sequences (val/, MOT17-91...; their own random stream, for choices)",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "min_frames": "shortest sequence length in frames (lengths are drawn uniformly)",
    "max_frames": "longest sequence length in frames",
    "min_objects": "fewest pedestrians present at once (each sequence draws a target crowd size)",
    "max_objects": "most pedestrians present at once",
    "static_persons": "static persons per sequence (GT class 7, flag 0; detectors see them)",
    "reflections": "reflections walking in a shop window per sequence (GT class 12, flag 0)",
    "camera_pan": "largest camera pan speed in pixels per frame (0 = static camera)",
    "frame_rate": "frameRate written to seqinfo.ini",
    "jpeg_quality": "JPEG quality of the img1/ frames",
    "test_gt": "write gt/gt.txt for test sequences too (real MOT17 has none)",
}


@dataclass(frozen=True)
class DetectorProfile:
    """A public-detector flavour: ``miss`` probability for a fully visible person, false alarms
    per frame (Poisson mean), box ``jitter`` (std of centre/size noise relative to the box),
    true/false detection score means and stds (scores clipped to [0.01, 1]), duplicate rate."""

    miss: float
    false_alarms: float
    jitter: float
    tp_score: tuple[float, float]
    fp_score: tuple[float, float]
    duplicates: float


#: Flavours named like MOT17's public detectors: DPM (weak), FRCNN (medium), SDP (strong).
DETECTOR_PROFILES: dict[str, DetectorProfile] = {
    "DPM": DetectorProfile(0.30, 2.0, 0.10, (0.45, 0.20), (0.25, 0.15), 0.05),
    "FRCNN": DetectorProfile(0.18, 0.8, 0.05, (0.85, 0.10), (0.45, 0.20), 0.02),
    "SDP": DetectorProfile(0.06, 0.25, 0.025, (0.93, 0.05), (0.55, 0.20), 0.01),
}


def _detections(cfg: SyntheticConfig, gt: dict[str, np.ndarray], length: int, prof: DetectorProfile,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated public detections -> (frame (D,), 0-based xyxy (D, 4), score (D,))."""
    W, H = cfg.width, cfg.height
    frames, boxes, scores = [], [], []

    def emit(t: int, box: np.ndarray, mean_sd: tuple[float, float], jitter: float) -> None:
        w, h = box[2] - box[0], box[3] - box[1]
        c = (box[:2] + box[2:]) / 2 + rng.normal(0, jitter, 2) * np.array([w, h])
        wh = np.array([w, h]) * np.exp(rng.normal(0, jitter, 2))
        b = np.concatenate([c - wh / 2, c + wh / 2])
        # Like GT, boxes may reach past the image border; mostly-outside ones are dropped.
        if b[2] - b[0] < 4 or b[3] - b[1] < 8 or inside_fraction(b, W, H) < 0.4:
            return
        frames.append(t)
        boxes.append(b)
        scores.append(float(np.clip(rng.normal(*mean_sd), 0.01, 1.0)))

    vis_term = np.clip((gt["vis"] - 0.05) / 0.45, 0, 1) ** 0.7
    in_term = np.clip((gt["inside"] - 0.4) / 0.4, 0, 1)
    p = (1 - prof.miss) * vis_term * in_term * np.select([gt["cls"] == 7, gt["cls"] == 12], [0.7, 0.4], 1.0)
    hit = rng.random(p.shape[0]) < p
    for k in np.flatnonzero(hit):
        emit(int(gt["frame"][k]), gt["box"][k], prof.tp_score, prof.jitter)
        if rng.random() < prof.duplicates:
            emit(int(gt["frame"][k]), gt["box"][k], prof.fp_score, 3 * prof.jitter)
    for t in range(1, length + 1):
        for _ in range(rng.poisson(prof.false_alarms)):
            yb = rng.uniform(0.5, 1.0) * H
            h = person_height(cfg, yb, rng.uniform(0.6, 1.2))
            cx = rng.uniform(0, W)
            emit(t, np.array([cx - 0.2 * h, yb - h, cx + 0.2 * h, yb]), prof.fp_score, 0.0)
    if not frames:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
    return np.asarray(frames, np.int64), np.stack(boxes), np.asarray(scores)


# --------------------------------------------------------------------------- writing
def _to_file_xywh(xyxy: np.ndarray, decimals: int | None = None) -> np.ndarray:
    """0-based xyxy -> MOTChallenge 1-based xywh."""
    out = np.concatenate([xyxy[:, :2] + 1, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return out if decimals is None else np.round(out, decimals)


def _write_sequence(cfg: SyntheticConfig, root: Path, number: int, rng_seed: list[int], with_gt: bool) -> dict:
    rng = np.random.default_rng(rng_seed)
    scene = simulate(cfg, rng)
    gt = gt_rows(cfg, scene)
    base = f"MOT17-{number:02d}"
    dirs = {v: root / f"{base}-{v}" for v in DETECTOR_PROFILES}
    first = None
    for v, d in dirs.items():
        write_seqinfo(SeqInfo(f"{base}-{v}", d, "img1", cfg.frame_rate, scene.length, cfg.width, cfg.height, ".jpg"))
        (d / "img1").mkdir(parents=True, exist_ok=True)
        if with_gt:
            write_gt(d / "gt" / "gt.txt", gt["frame"], gt["id"], _to_file_xywh(gt["box"]), gt["flag"], gt["cls"], gt["vis"])
    params = [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)]
    for t in range(1, scene.length + 1):
        ok, buf = cv2.imencode(".jpg", render_frame(scene, t, cfg.width), params)
        if not ok:
            raise RuntimeError("OpenCV failed to encode a JPEG")
        for i, d in enumerate(dirs.values()):
            path = d / "img1" / f"{t:06d}.jpg"
            if i == 0:
                path.write_bytes(buf.tobytes())
                first = path
            else:
                _link_or_copy(first, path)
    n_det = {}
    for k, (v, prof) in enumerate(DETECTOR_PROFILES.items()):
        det_rng = np.random.default_rng(rng_seed + [100 + k])
        f, b, s = _detections(cfg, gt, scene.length, prof, det_rng)
        write_detections(dirs[v] / "det" / "det.txt", f, _to_file_xywh(b, 2), np.round(s, 4))
        n_det[v] = int(len(f))
    ped = gt["cls"] == 1
    return {"name": base, "frames": scene.length, "ids": int(np.unique(gt["id"][ped]).size),
            "gt_rows": int(ped.sum()), "distractor_rows": int((~ped).sum()), "detections": n_det}


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def generate_synthetic(out, config: SyntheticConfig | None = None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Write the synthetic MOT17 set into ``out`` (``train/``, ``val/``, ``test/``, ``seqmaps/``
    and a ``synthetic.json`` marker holding the knobs). Returns one summary dict per sequence.

    Sequence ``k`` of a split draws from the random stream ``(seed, split_id, k)`` with split ids
    train 0, test 1, val 2: adding validation sequences changes no train or test sequence."""
    cfg = config or SyntheticConfig()
    out = Path(out)
    summaries = []
    val_numbers = tuple(range(_VAL_FIRST_NUMBER, _VAL_FIRST_NUMBER + cfg.num_val))
    for split, count, numbers, split_id in (("train", cfg.num_train, _TRAIN_NUMBERS, 0),
                                            ("val", cfg.num_val, val_numbers, 2),
                                            ("test", cfg.num_test, _TEST_NUMBERS, 1)):
        if split == "val" and count == 0:
            continue
        names = []
        for k in range(count):
            number = numbers[k] if k < len(numbers) else 15 + 2 * (k - len(numbers)) + split_id
            with_gt = split != "test" or cfg.test_gt
            info = _write_sequence(cfg, out / split, number, [cfg.seed, split_id, k], with_gt)
            info["split"] = split
            summaries.append(info)
            names += [f"{info['name']}-{v}" for v in DETECTOR_PROFILES]
            if log:
                log(f"synthetic {split}/{info['name']}: {info['frames']} frames, {info['ids']} ids, "
                    f"{info['gt_rows']} GT boxes, detections {info['detections']}")
        seqmap = out / "seqmaps" / f"MOT17-{split}.txt"
        seqmap.parent.mkdir(parents=True, exist_ok=True)
        seqmap.write_text("name\n" + "".join(n + "\n" for n in sorted(names)))
    (out / MARKER).write_text(json.dumps({"format": _FORMAT_VERSION, "config": asdict(cfg)}, indent=1) + "\n")
    return summaries


def _marker_matches(folder: Path, cfg: SyntheticConfig) -> bool:
    try:
        meta = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == _FORMAT_VERSION and meta.get("config") == asdict(cfg)


def resolve_data_root(data=None, log: Callable[[str], None] | None = None, data_dir="data",
                      config: SyntheticConfig | None = None) -> Path:
    """Where the MOT17-format data is.

    ``data`` given: that folder (MissingDataError if absent). Otherwise ``<data_dir>/MOT17`` if
    it exists, else the synthetic set in ``<data_dir>/synthetic``, generated once (regenerated
    only when its ``synthetic.json`` knobs differ from ``config``). ``log`` receives a line
    saying which data is used (default: this module's logger).
    """
    log = log or logging.getLogger(__name__).info
    if data is not None:
        path = Path(data)
        if not path.is_dir():
            raise MissingDataError("dataset folder given with --data does not exist", path)
        return path
    data_dir = Path(data_dir)
    real = data_dir / "MOT17"
    if real.is_dir():
        log(f"using MOT17 found at {real}")
        return real
    cfg = config or SyntheticConfig()
    target = data_dir / "synthetic"
    if _marker_matches(target, cfg):
        log(f"no --data and no {real}: using the synthetic MOT17 set in {target}")
        return target
    log(f"no --data and no {real}: generating the synthetic MOT17 set into {target} (once)")
    tmp = data_dir / f".synthetic-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    generate_synthetic(tmp, cfg, log=log)
    if _marker_matches(target, cfg):  # another process finished the same set meanwhile: it may be
        shutil.rmtree(tmp)            # reading it already, so keep it
        return target
    if target.exists():
        if not (target / MARKER).is_file():
            shutil.rmtree(tmp)
            raise MissingDataError(f"{target} exists but is not a generated synthetic set; move it away", target)
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deepmot.datasets.synthetic",
        description="Generate the built-in synthetic MOT17-format dataset (deterministic from --seed).",
    )
    ap.add_argument("--out", required=True, help="output folder (train/, val/, test/, seqmaps/ are written inside)")
    defaults = SyntheticConfig()
    for f in fields(SyntheticConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                            help=f"{_HELP[f.name]} (default: %(default)s)")
        else:
            ap.add_argument(flag, dest=f.name, type=type(default), default=default,
                            help=f"{_HELP[f.name]} (default: %(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry: parse knobs, generate, print one line per sequence."""
    args = vars(_parser().parse_args(argv))
    out = args.pop("out")
    try:
        cfg = SyntheticConfig(**args)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    generate_synthetic(out, cfg, log=print)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
