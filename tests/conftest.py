"""Shared test fixtures. Reference data comes from ``tests/fixtures`` (in the repository); only the
PySOT reference run lives in ``../shared`` alone, and the tests needing it skip cleanly without it."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: Reference fixtures shipped with the repository (trimmed; sources and licences in its README).
IN_REPO = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ``../shared`` (reference fixtures and specs); skips the test when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip("../shared/fixtures is not present (a user's clone has no ../shared)")
    return SHARED


def _materialise(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``, un-gzipping ``*.gz`` files (stored compressed to keep the clone small)."""
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.name == "README.md" and p.parent == src:
            continue
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                out.with_suffix("").write_bytes(f.read())
        else:
            shutil.copyfile(p, out)


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """The reference fixtures: ``tests/fixtures`` of the repository first (MOT17-09 annotations and
    Lif_T results, matcher/loss references, PySOT key layouts), unpacked into a temporary folder;
    the PySOT reference run (36 MB, not in the repository) is linked from ``../shared/fixtures``
    when present (see :func:`pysot_dir`)."""
    root = tmp_path_factory.mktemp("fixtures")
    _materialise(IN_REPO, root)
    if (SHARED / "fixtures" / "pysot").is_dir():
        (root / "pysot").symlink_to(SHARED / "fixtures" / "pysot", target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def pysot_dir(fixtures_dir: Path) -> Path:
    """``fixtures/pysot``: PySOT's own outputs on deterministic test weights (25 MB of weights, kept
    out of the repository); skips the test when ``../shared/fixtures/pysot`` is absent."""
    if not (fixtures_dir / "pysot").is_dir():
        pytest.skip("the PySOT reference run (../shared/fixtures/pysot, 36 MB) is not in the repository")
    return fixtures_dir / "pysot"


@pytest.fixture(scope="session")
def pysot_keys_dir(fixtures_dir: Path) -> Path:
    """PySOT / DaSiamRPN state-dict key layouts (``<config>.txt``: key, shape, dtype per line)."""
    return fixtures_dir / "pysot_keys"


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module with one torch intra-op thread (set up before its other fixtures).

    Tests on small tensors spend more on thread hand-offs than on arithmetic (about 5x the CPU
    time on a shared 2-core machine); modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
