"""``bench/gpu.sh --smoke`` (the one-call GPU benchmark) runs on the CPU and prints its three tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_mode_runs_on_cpu():
    env = dict(os.environ, PYTHON=sys.executable, GPU_SH_TESTS="0", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for title in ("1. SiamRPN tracking", "2. DHN", "3. DeepMOT fine-tuning", "total"):
        assert title in text, text
    rows = [line.split() for line in text.splitlines()]
    tracking = [r for r in rows if r[:1] == ["tiny"]]
    assert [r[1] for r in tracking] == ["1", "2"] and all(float(r[3]) > 0 and float(r[4]) > 0 for r in tracking)
    dhn = [r for r in rows if r[:1] == ["3x3"]]
    assert len(dhn) == 1 and float(dhn[0][2]) > 0 and float(dhn[0][3]) > 0
    train = [r for r in rows if r[:1] == ["siamrpn_alex_tiny"]]
    assert len(train) == 1 and float(train[0][4]) > 0
