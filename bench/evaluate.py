"""Benchmark: wall time of deepmot's evaluation vs the ``trackeval`` package vs py-motmetrics' own
pipeline, on the MOT17-09 fixture (Lif_T) and on a larger synthetic MOT17-format set.

    python bench/evaluate.py [--fixtures ../shared/fixtures/mot17] [--seqs 4 --frames 600 --objects 30]
    python bench/evaluate.py --memory 200 [--tree OLD_CHECKOUT]    # peak RSS reading a 200 MB result file

Prints one table: wall seconds (best of ``--repeat``), CPU seconds per run (all processes; the
steadier measure on a shared machine) and peak resident memory, each pipeline in a fresh process.
All pipelines include reading the files; the first row times our readers alone (``read_gt`` + ``read_results`` on every sequence).
motmetrics' pipeline is ``io.loadtxt`` + ``utils.compare_to_groundtruth`` + ``compute_many``
(numpy 2 needs the ``np.asfarray`` shim; no MOT17 preprocessing: it is motmetrics' own protocol).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The code under test: this checkout, or the one ``--tree`` names (set for the child processes).
sys.path.insert(0, os.environ.get("DEEPMOT_BENCH_TREE", str(REPO)))

from deepmot.datasets.mot import (  # noqa: E402
    SeqInfo,
    discover_sequences,
    read_gt,
    read_results,
    write_gt,
    write_results,
    write_seqinfo,
)
from deepmot.evaluation import MODES, evaluate_tasks, tasks_from_folders  # noqa: E402


def synthetic(root: Path, n_seqs: int, n_frames: int, n_obj: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/gt/MOT17-train/<seq>`` and ``root/trackers/MOT17-train/T/data`` (TrackEval layout)."""
    rng = np.random.default_rng(seed)
    gt_fol, trk_fol = root / "gt" / "MOT17-train", root / "trackers" / "MOT17-train" / "T" / "data"
    for s in range(n_seqs):
        name = f"SYN-{s:02d}"
        g, r = [], []
        for oid in range(1, n_obj + 1):
            a = int(rng.integers(1, n_frames // 2))
            b = int(rng.integers(a + 10, n_frames + 1))
            cls = 1 if rng.random() < 0.85 else int(rng.choice([2, 7, 8, 12]))
            xy, wh = rng.uniform(0, 1800, 2), rng.uniform(30, 200, 2)
            tid = oid
            for f in range(a, b + 1):
                xy = xy + rng.normal(0, 2, 2)
                g.append((f, oid, *xy, *wh, int(cls == 1), cls, 1.0))
                if rng.random() < 0.1:
                    continue
                if rng.random() < 0.005:
                    tid += 1000
                r.append((f, tid, *(np.r_[xy, wh] + rng.normal(0, 4, 4) * [1, 1, .5, .5])))
        for f in range(1, n_frames + 1):
            for k in range(int(rng.poisson(1.0))):
                r.append((f, 90000 + f * 10 + k, *rng.uniform(0, 1800, 2), *rng.uniform(30, 200, 2)))
        g, r = np.array(g), np.array(r)
        r[:, 4:6] = np.maximum(r[:, 4:6], 1)
        d = gt_fol / name
        write_seqinfo(SeqInfo(name, d, "img1", 30.0, n_frames, 1920, 1080, ".jpg"))
        write_gt(d / "gt" / "gt.txt", g[:, 0], g[:, 1], g[:, 2:6], g[:, 6], g[:, 7], g[:, 8])
        write_results(trk_fol / f"{name}.txt", r[:, 0], r[:, 1], r[:, 2:6])
    return gt_fol, trk_fol


def run_ours(gt_fol: Path, trk_fol: Path, workers: int, mode: str = "official") -> float:
    t0 = time.perf_counter()
    tasks, _ = tasks_from_folders(trk_fol, discover_sequences(gt_fol, "."))
    ev = evaluate_tasks(tasks, "mot17", MODES[mode], workers=workers)
    assert not ev.errors, ev.errors
    return time.perf_counter() - t0


def run_read(gt_fol: Path, trk_fol: Path) -> float:
    """Only the text parsing part of ours: read every GT and result file (part of ``run_ours``)."""
    t0 = time.perf_counter()
    tasks, _ = tasks_from_folders(trk_fol, discover_sequences(gt_fol, "."))
    for t in tasks:
        read_gt(t.gt_path, t.num_frames)
        read_results(t.results_path, t.num_frames)
    return time.perf_counter() - t0


def run_trackeval(gt_fol: Path, trk_fol: Path, workers: int = 1) -> float:
    import trackeval
    from trackeval.metrics import CLEAR, HOTA, Identity

    names = sorted(p.stem for p in trk_fol.glob("*.txt"))
    with tempfile.TemporaryDirectory() as tmp:
        # TrackEval layout: GT_FOLDER/MOT17-train/<seq>, TRACKERS_FOLDER/MOT17-train/T/data
        root = Path(tmp)
        (root / "gt").mkdir()
        (root / "gt" / "MOT17-train").symlink_to(gt_fol.resolve(), target_is_directory=True)
        (root / "trackers" / "MOT17-train" / "T").mkdir(parents=True)
        (root / "trackers" / "MOT17-train" / "T" / "data").symlink_to(trk_fol.resolve(), target_is_directory=True)
        seqmap = root / "seqmap.txt"
        seqmap.write_text("name\n" + "".join(f"{n}\n" for n in names))
        ev_cfg = trackeval.Evaluator.get_default_eval_config()
        ev_cfg.update(USE_PARALLEL=workers > 1, NUM_PARALLEL_CORES=workers, PRINT_RESULTS=False, PRINT_CONFIG=False,
                      OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False, PLOT_CURVES=False, TIME_PROGRESS=False,
                      DISPLAY_LESS_PROGRESS=True)
        ds_cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
        ds_cfg.update(GT_FOLDER=str(root / "gt"), TRACKERS_FOLDER=str(root / "trackers"), BENCHMARK="MOT17",
                      SPLIT_TO_EVAL="train", TRACKERS_TO_EVAL=["T"], SEQMAP_FILE=str(seqmap),
                      OUTPUT_FOLDER=str(root / "out"), PRINT_CONFIG=False)
        t0 = time.perf_counter()
        trackeval.Evaluator(ev_cfg).evaluate([trackeval.datasets.MotChallenge2DBox(ds_cfg)], [HOTA(), CLEAR(), Identity()])
        return time.perf_counter() - t0


def run_motmetrics(gt_fol: Path, trk_fol: Path) -> float:
    import motmetrics as mm

    if not hasattr(np, "asfarray"):  # motmetrics 1.4.0 on numpy 2
        np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)
    t0 = time.perf_counter()
    accs, names = [], []
    for res in sorted(trk_fol.glob("*.txt")):
        gt = mm.io.loadtxt(str(gt_fol / res.stem / "gt" / "gt.txt"), fmt="mot15-2D", min_confidence=1)
        ts = mm.io.loadtxt(str(res), fmt="mot15-2D")
        accs.append(mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5))
        names.append(res.stem)
    mh = mm.metrics.create()
    mh.compute_many(accs, names=names, metrics=mm.metrics.motchallenge_metrics, generate_overall=True)
    return time.perf_counter() - t0


def big_results(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a valid result file of about ``megabytes`` MB (1e6 bytes; 10 columns, MOT20-like
    crowds of 900 boxes per frame) -> its row count."""
    rng = np.random.default_rng(seed)
    rows, size, frame = 0, 0, 1
    with open(path, "w") as f:
        while size < megabytes * 1e6:
            xy, wh = rng.uniform(0, 1800, (900, 2)), rng.uniform(20, 200, (900, 2))
            text = "".join(f"{frame},{i + 1},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{c:.4f},-1,-1,-1\n"
                           for i, (x, y, w, h, c) in enumerate(zip(*xy.T, *wh.T, rng.random(900))))
            f.write(text)
            rows, size, frame = rows + 900, size + len(text), frame + 1
    return rows


def vm_hwm() -> float:
    """This process's peak resident set (MiB), ``VmHWM`` of ``/proc/self/status`` (Linux). Unlike
    ``ru_maxrss`` it is not inherited from the parent across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


_PEAK = """
import sys, time
from pathlib import Path
from deepmot.datasets.mot import read_results
def hwm():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
base = hwm()
t = time.perf_counter()
rows = read_results(sys.argv[1])
print(len(rows), base, hwm(), time.perf_counter() - t)
"""


def peak_memory(path: Path, tree: Path) -> dict:
    """Peak RSS (MB) of a fresh process that imports ``tree``'s readers and then reads ``path``
    with ``read_results``; ``base`` is its peak after the imports alone."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout.split()
    rows, base, peak, sec = int(out[0]), int(out[1]) / 1024, int(out[2]) / 1024, float(out[3])
    return {"rows": rows, "base": base, "peak": peak, "sec": sec}


def memory_table(megabytes: float, trees: list[Path]) -> None:
    """Print peak RSS reading a generated result file of ``megabytes`` MB, once per code tree."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        rows = big_results(path, megabytes)
        size = path.stat().st_size / 2**20
        print(f"result file: {size:.0f} MiB, {rows} rows; load {os.getloadavg()[0]:.1f}")
        print(f"{'code':<40} {'read s':>7} {'RSS after import MiB':>21} {'peak RSS MiB':>13} {'peak / file':>12}")
        for tree in trees:
            r = peak_memory(path, tree)
            assert r["rows"] == rows, (r["rows"], rows)
            print(f"{str(tree)[-40:]:<40} {r['sec']:>7.2f} {r['base']:>21.0f} {r['peak']:>13.0f} "
                  f"{r['peak'] / size:>11.2f}x", flush=True)


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


PIPELINES = {
    "read": ("deepmot: reading the text files only", lambda g, t: run_read(g, t)),
    "ours1": ("deepmot official, 1 worker", lambda g, t: run_ours(g, t, 1)),
    "ours2": ("deepmot official, 2 workers", lambda g, t: run_ours(g, t, 2)),
    "oursmm": ("deepmot motmetrics mode, 1 worker", lambda g, t: run_ours(g, t, 1, "motmetrics")),
    "trackeval": ("trackeval 1.3.0 (HOTA+CLEAR+Identity), serial", lambda g, t: run_trackeval(g, t)),
    "motmetrics": ("motmetrics 1.4.0 compare_to_groundtruth+compute_many", lambda g, t: run_motmetrics(g, t)),
}


def run_one(key: str, gt_fol: Path, trk_fol: Path, repeat: int) -> None:
    """Child process: time one pipeline, print the best wall seconds of ``repeat`` runs, the CPU
    seconds per run (this process and its workers, user + system), and the peak RSS (MiB) of this
    process (``VmHWM``) and of its largest finished child (the forked worker processes;
    ``ru_maxrss``, which counts the pages they share with this process too)."""
    import resource

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c0 = cpu()
    sec = best(lambda: PIPELINES[key][1](gt_fol, trk_fol), repeat)
    cpu_sec = (cpu() - c0) / repeat
    own = vm_hwm()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(sec, cpu_sec, own, kids)


def measure(key: str, gt_fol: Path, trk_fol: Path, repeat: int,
            tree: Path = REPO) -> tuple[float, float, float, float]:
    """Run :func:`run_one` in a fresh process with ``tree``'s code -> (seconds, CPU seconds, peak
    MiB, worker peak MiB)."""
    env = dict(os.environ, PYTHONPATH=str(tree), DEEPMOT_BENCH_TREE=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", key, str(gt_fol), str(trk_fol),
           "--repeat", str(repeat)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.split()
    return float(out[-4]), float(out[-3]), float(out[-2]), float(out[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "mot17")
    p.add_argument("--seqs", type=int, default=4)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--objects", type=int, default=30)
    p.add_argument("--crowd", type=int, nargs=3, default=[4, 3000, 150], metavar=("SEQS", "FRAMES", "OBJECTS"),
                   help="MOT20-like crowded synthetic set (0 0 0: skip it); motmetrics' own pipeline is "
                        "not run on it (its per-frame loop takes minutes)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    p.add_argument("--memory", type=float, metavar="MB",
                   help="instead of timing: peak RSS of read_results on a generated MB-sized result file")
    p.add_argument("--tree", type=Path, nargs="*", default=[],
                   help="other code trees (e.g. an old checkout) measured too: with --memory, and for the "
                        "'ours1' pipeline when timing")
    p.add_argument("--one", nargs=3, metavar=("PIPELINE", "GT", "TRK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run_one(args.one[0], Path(args.one[1]), Path(args.one[2]), args.repeat)
        return
    if args.memory:
        memory_table(args.memory, [REPO, *args.tree])
        return
    datasets = []
    if args.fixtures.is_dir():
        datasets.append(("MOT17-09 x3 (Lif_T)", args.fixtures / "train", args.fixtures / "results" / "Lif_T"))
    tmp = tempfile.TemporaryDirectory()
    g, t = synthetic(Path(tmp.name) / "small", args.seqs, args.frames, args.objects)
    datasets.append((f"synthetic {args.seqs}x{args.frames}f x{args.objects} obj", g, t))
    if all(args.crowd):
        g, t = synthetic(Path(tmp.name) / "crowd", *args.crowd)
        datasets.append(("crowd {}x{}f x{} obj".format(*args.crowd), g, t))
    print(f"best of {args.repeat}, each pipeline in a fresh process; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'data':<30} {'pipeline':<54} {'seconds':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'worker peak':>12}",
          flush=True)
    for label, gt_fol, trk_fol in datasets:
        jobs = [(k, REPO) for k in args.pipelines] + [("ours1", tree) for tree in args.tree if "ours1" in args.pipelines]
        for key, tree in jobs:
            if key == "motmetrics" and label.startswith("crowd"):
                continue
            name = PIPELINES[key][0] + ("" if tree == REPO else f" [{tree}]")
            sec, cpu, own, kids = measure(key, gt_fol, trk_fol, args.repeat, tree)
            print(f"{label:<30} {name:<54} {sec:8.2f} {cpu:8.2f} {own:13.0f} "
                  f"{kids if kids > 0 else float('nan'):12.0f}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
