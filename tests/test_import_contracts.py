"""The layering of deepmot and trackers, as the import-linter contracts in pyproject.toml state it:
they hold for the code, and they fail when a forbidden import is added."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` with ``root/pyproject.toml``."""
    env = dict(os.environ, PYTHONPATH=str(root))
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "BROKEN" not in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("deepmot/engine/clips.py", "import trackers.siamrpn", "deepmot never imports trackers"),
    ("deepmot/dhn/model.py", "import deepmot.criterion", "the DHN never imports the criterion"),
    ("deepmot/datasets/layout.py", "import deepmot.engine.clips", "deepmot layers"),
    ("trackers/siamrpn/trainable.py", "import deepmot.engine.deepmot_train", "trackers use the engine only"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    for name in ("deepmot", "trackers"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    out = _lint(tmp_path)
    assert out.returncode != 0, out.stdout[-3000:]
    broken = [ln for ln in out.stdout.splitlines() if "BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken) or contract in out.stdout.split("Broken contracts")[-1], \
        out.stdout[-3000:]


def test_no_import_cycle_inside_datasets():
    graph = grimp.build_graph("deepmot")
    mods = sorted(m for m in graph.modules if m.startswith("deepmot.datasets."))
    cycles = [(a, b) for a, b in itertools.combinations(mods, 2)
              if graph.chain_exists(a, b) and graph.chain_exists(b, a)]
    assert cycles == []
