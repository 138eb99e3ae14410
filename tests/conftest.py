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
