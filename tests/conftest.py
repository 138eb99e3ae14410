"""Shared test fixtures. Tests that need ``../shared`` skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ``../shared`` (reference fixtures and specs); skips the test when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip("../shared/fixtures is not present (a user's clone has no ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    """Path of ``../shared/fixtures``."""
    return shared_dir / "fixtures"


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
