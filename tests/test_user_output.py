"""What a user sees of the long commands: a progress bar on a terminal (a real pty), periodic
lines in log.txt otherwise; complete run logs naming every file once; files readable by others
under umask 022; DHN training's usable outputs; the machine line and the load warning."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import stat
import struct
import subprocess
import sys
import termios
import weakref
from pathlib import Path

import pytest
import torch

from deepmot.datasets.synthetic import SyntheticConfig, generate_synthetic

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SOT = REPO / "trackers" / "siamrpn" / "weights" / "siamrpn_alex_tiny_synthetic.pth"
#: characters of a tqdm bar (its "| 3/5 [00:01<00:02, 2.1step/s]" frame and block glyphs)
BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[\d\d:\d\d<")
BAR_CHARS = ("\r", "█", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "%|")
DHN_TINY = ["model.hidden_size=4", "model.head_dims=[4,4]", "data.max_size=6", "data.elements_per_batch=64",
            "val_count=8", "val_every=2", "checkpoint_every=1", "log_every=1", "num_threads=1", "steps=3"]


def _sets(items: list[str]) -> list[str]:
    return [a for it in items for a in ("--set", it)]


def _run(cmd: list[str], cwd: Path, tty: bool, timeout: float = 300) -> str:
    """Run ``cmd`` with umask 022, stderr (and stdout) on a pseudo-terminal when ``tty``, else on a
    pipe; returns everything it printed. Progress lines are due at every update (interval 0)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEEPMOT_PROGRESS_SECONDS": "0", "OMP_NUM_THREADS": "1"}
    env.pop("DEEPMOT_PROGRESS", None)

    def umask():
        os.umask(0o022)

    if not tty:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=umask, timeout=timeout)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, out
        return out
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         preexec_fn=umask)
    os.close(slave)
    chunks = []
    while True:  # drain the pty while the child runs (its buffer is small)
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            p.kill()
            raise TimeoutError(" ".join(cmd))
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    rc = p.wait(timeout=60)
    out = b"".join(chunks).decode(errors="replace")
    assert rc == 0, out
    return out


def _run_dir(root: Path) -> Path:
    (d,) = [p for p in root.iterdir() if p.is_dir()]
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("user_output")
    generate_synthetic(root / "data", SyntheticConfig(seed=4, num_train=1, num_test=1, min_frames=6, max_frames=6,
                                                      width=160, height=96, min_objects=2, max_objects=2,
                                                      static_persons=0, reflections=0, camera_pan=0.0))
    from trackers.siamrpn import build_siamrpn

    torch.manual_seed(0)
    torch.save(build_siamrpn("siamrpn_alex_tiny").state_dict(), root / "sot.pth")
    return {"root": root}


@pytest.fixture(scope="module", params=["tty", "pipe"])
def mode(request) -> str:
    """Where the commands' stderr goes: a pseudo-terminal or a pipe."""
    return request.param


@pytest.fixture(scope="module")
def dhn_run(mode, world) -> dict:
    """``train.py --dhn`` for 3 steps."""
    cwd = world["root"] / f"dhn_{mode}"
    cwd.mkdir()
    out = _run([sys.executable, str(REPO / "train.py"), "--dhn", *_sets(DHN_TINY)], cwd, mode == "tty")
    return {"mode": mode, "out": out, "dir": _run_dir(cwd / "runs" / "dhn")}


@pytest.fixture(scope="module")
def main_run(mode, world, dhn_run) -> dict:
    """The main job (SOT pre-training first, evaluation before and after, 2 DeepMOT steps) with the
    DHN weights written by ``train.py --dhn``."""
    root = world["root"]
    cmd = [sys.executable, str(REPO / "train.py"), "--tracker", "siamrpn", "--data", str(root / "data"),
           "--config", str(REPO / "configs" / "deepmot_siamrpn_synthetic.yaml"),
           "--dhn-weights", str(dhn_run["dir"] / "dhn.pt"), "--name", f"main_{mode}",
           *_sets([f"pretrain=[steps=2,batch_size=2,log_every=1,base_lr=1.0e-6,end_lr=1.0e-6,init={SHIPPED_SOT}]", "max_steps=2", "seq_len=3",
                   "num_repeats=1", "log_every=1", "threads=1", "device=cpu", f"runs_root={root / 'runs'}",
                   "validation.detections=[FRCNN]"])]
    out = _run(cmd, root, mode == "tty")
    return {"mode": mode, "out": out, "dir": _run_dir(root / "runs" / f"main_{mode}")}


@pytest.fixture(scope="module")
def eval_run(mode, world) -> dict:
    """``evaluate.py`` running the tracker on the test sequence."""
    root = world["root"]
    out_dir = root / f"eval_{mode}"
    cmd = [sys.executable, str(REPO / "evaluate.py"), "--data", str(root / "data"), "--checkpoint",
           str(root / "sot.pth"), "--out", str(out_dir), "--detections", "FRCNN", "--device", "cpu", "--threads", "1"]
    return {"mode": mode, "out": _run(cmd, root, mode == "tty"), "dir": out_dir}


def _check_progress(run: dict, loops: list[str]) -> None:
    log_txt = (run["dir"] / "log.txt").read_text() if (run["dir"] / "log.txt").is_file() else ""
    assert not any(c in log_txt for c in BAR_CHARS)
    for desc in loops:
        bars = [ln for ln in re.split(r"[\r\n]", run["out"]) if re.search(re.escape(desc) + r":\s+\d+%\|", ln)
                and BAR.search(ln)]
        lines = re.findall(rf"INFO {re.escape(desc)}: \d+/\d+ \(", log_txt if log_txt else run["out"])
        if run["mode"] == "tty":
            assert bars, f"no progress bar for {desc!r} in:\n{run['out'][-3000:]}"
            assert not lines
        else:
            assert not bars and not any(c in run["out"] for c in BAR_CHARS)
            assert len(lines) >= 2, f"no periodic lines for {desc!r}"


def test_dhn_training_shows_progress(dhn_run):
    _check_progress(dhn_run, ["DHN steps"])


@pytest.mark.slow
def test_main_job_shows_progress_of_every_stage(main_run):
    _check_progress(main_run, ["SOT pre-training", "DeepMOT steps", "tracking"])


def test_evaluate_shows_progress(eval_run):
    out = eval_run["out"]
    if eval_run["mode"] == "tty":
        assert [ln for ln in re.split(r"[\r\n]", out) if re.search(r"tracking \S+:\s+\d+%\|", ln) and BAR.search(ln)]
    else:  # no logging configured: plain lines on stderr
        assert len(re.findall(r"^tracking \S+: \d+/\d+ \(", out, re.M)) >= 2
        assert not any(c in out for c in BAR_CHARS)
    assert re.search(r"device cpu, torch \S+ with 1 thread\(s\), \d+ usable core", out)


def test_dhn_run_writes_loadable_weights_and_curves(dhn_run):
    from deepmot.dhn.model import DeepHungarianNet

    weights = dhn_run["dir"] / "dhn.pt"
    state = torch.load(weights, weights_only=True)
    assert set(state) >= {"model", "model_config"} and "optimizer" not in state
    best = torch.load(dhn_run["dir"] / "checkpoints" / "best.pt", weights_only=True)
    net = DeepHungarianNet.pretrained(weights)
    assert net.config.hidden_size == 4
    for k, v in net.state_dict().items():
        assert torch.equal(v, best["model"][k])
    assert weights.stat().st_size < (dhn_run["dir"] / "checkpoints" / "best.pt").stat().st_size
    png = dhn_run["dir"] / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_txt = (dhn_run["dir"] / "log.txt").read_text()
    assert f"wrote DHN weights (from best.pt; use with --dhn-weights): {weights}" in log_txt
    assert re.search(r"score \d+\.\d{3} %", log_txt)                # percent, TrackEval's decimals
    files = _assert_named_once_and_readable(dhn_run["dir"])
    assert {"config.yaml", "log.txt", "metrics.csv", "last.pt", "best.pt", "dhn.pt", "curves.png"} <= {
        p.name for p in files}


@pytest.mark.slow
def test_main_job_log_names_every_file_once_and_files_are_readable(main_run):
    run_dir = main_run["dir"]
    log_txt = (run_dir / "log.txt").read_text()
    # the SOT pre-training's own lines, and the machine line of both runs
    assert re.search(r"INFO step 2/2 loss \d", log_txt)
    assert "wrote SOT weights: " + str(run_dir / "sot_pretrained.pth") in log_txt
    assert len(re.findall(r"INFO device cpu, torch \S+ with 1 thread\(s\), \d+ usable core\(s\) of \d+, load average",
                          log_txt)) == 2
    # percent with 3 decimals wherever metrics are printed
    assert re.search(r"eval @ step 0 .*MOTA -?\d+\.\d{3}, IDF1 \d+\.\d{3}", log_txt)
    assert re.search(r"MOTA  before +-?\d+\.\d{3}  after +-?\d+\.\d{3} %", log_txt)
    files = _assert_named_once_and_readable(run_dir)
    assert {"config.yaml", "log.txt", "metrics.csv", "last.pt", "best.pt", "sot_pretrained.pth",
            "siamrpn_deepmot.pth", "curves.png"} <= {p.name for p in files}
    assert any(p.suffix == ".txt" and "eval" in p.parts for p in files)


def _assert_named_once_and_readable(run_dir: Path) -> list[Path]:
    """Every file under ``run_dir`` is named exactly once (absolute path) in its log.txt and is
    mode 0644, every folder 0755 (the commands ran under umask 022). Returns the files."""
    log_txt = (run_dir / "log.txt").read_text()
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    for p in files:
        assert p.is_absolute()
        n = len(re.findall(re.escape(str(p)) + r"(?![\w./-])", log_txt))
        assert n == 1, f"{p} named {n} times in log.txt"
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    for d in (p for p in run_dir.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    return files


# --------------------------------------------------------------------------- units
def test_progress_mode_follows_the_terminal_rank_and_override(monkeypatch):
    from deepmot import progress as pg

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("DEEPMOT_PROGRESS", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert pg.progress_mode() == "bar"
    monkeypatch.setenv("RANK", "1")
    assert pg.progress_mode() == "off" and pg.progress(range(3)).mode == "off"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("DEEPMOT_PROGRESS", "log")
    assert pg.progress_mode() == "log"
    monkeypatch.setenv("DEEPMOT_PROGRESS", "bars")
    with pytest.raises(ValueError, match="DEEPMOT_PROGRESS"):
        pg.progress_mode()


def test_log_lines_are_periodic_and_count_what_was_done(monkeypatch, capsys):
    import logging

    from deepmot import progress as pg
    from deepmot.progress import progress

    # no run open, logging not configured (as in evaluate.py): the lines go to stderr
    monkeypatch.setattr(pg, "log", logging.getLogger("test_user_output.unconfigured"))
    monkeypatch.setenv("DEEPMOT_PROGRESS", "log")
    monkeypatch.setenv("DEEPMOT_PROGRESS_SECONDS", "0")
    assert list(progress(range(4), desc="work", unit="item")) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(",")[0] for ln in lines] == [f"work: {k}/4 ({25 * k:.1f} %)" for k in (1, 2, 3, 4)]
    bar = progress(total=10, initial=4, desc="resumed")
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err.startswith("resumed: 7/10 (70.0 %)")
    monkeypatch.setenv("DEEPMOT_PROGRESS_SECONDS", "3600")          # a short loop says nothing
    for _ in progress(range(50), desc="quiet"):
        pass
    assert capsys.readouterr().err == ""


def test_load_above_the_core_count_warns(monkeypatch):
    from deepmot import machine

    cores = os.cpu_count()
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.5, 0.0, 0.0))
    assert f"load average {cores + 0.5:.2f} > {cores} core(s)" in machine.load_warning()
    assert f"load average {cores + 0.5:.2f}" in machine.describe("cpu")
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 0.0, 0.0))
    assert machine.load_warning() is None


def test_run_log_collects_package_loggers_and_runs_inside_it(tmp_path, monkeypatch):
    import logging

    from deepmot.runtime import run as run_mod
    from deepmot.runtime.run import Run

    monkeypatch.setattr(run_mod, "_OPEN_RUNS", weakref.WeakSet())   # runs other tests left open do not count

    outer = Run.create("outer", root=tmp_path)
    logging.getLogger("deepmot.engine.inference").info("module line")
    inner = Run.create("inner", root=outer.dir / "sub")
    inner.logger.info("inner line")
    inner.wrote(inner.dir / "x.bin", "thing")
    inner.wrote(inner.dir / "x.bin", "thing")
    inner.close()
    logging.getLogger("trackers.multi").info("after inner")
    outer.close()
    logging.getLogger("deepmot.engine.inference").info("after close")
    text, inner_text = (outer.dir / "log.txt").read_text(), (inner.dir / "log.txt").read_text()
    assert "module line" in text and "inner line" in text and "after inner" in text
    assert text.count(f"wrote thing: {inner.dir / 'x.bin'}") == 1 and "inner line" in inner_text
    assert "after inner" not in inner_text and "after close" not in text
    assert not any(getattr(h, "_deepmot_console", False) for h in logging.getLogger("deepmot").handlers)
    dropped = Run.create("dropped", root=tmp_path)                     # never closed, then forgotten
    log_file = dropped.dir / "log.txt"
    del dropped
    logging.getLogger("deepmot.engine.inference").info("after drop")
    assert "after drop" not in log_file.read_text() and not run_mod._OPEN_RUNS


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, mask, mode):
    from deepmot.fileio import atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]            # no temporary file left


def test_pytest_summary_counts_skips_without_listing_them(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('i', range(3))\ndef test_skips(i):\n    pytest.skip('no data')\n\n"
        "def test_fails():\n    assert 1 == 2\n\ndef test_passes():\n    pass\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                        str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path / "test_some.py")],
                       cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert "1 failed, 1 passed, 3 skipped" in p.stdout
    assert "FAILED" in p.stdout and "test_fails" in p.stdout                  # failures are listed
    assert "SKIPPED" not in p.stdout and "no data" not in p.stdout            # skips only counted
