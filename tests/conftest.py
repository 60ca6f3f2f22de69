"""Shared fixtures: where the real speech of ``../shared/data`` lives."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The real-speech folder: ``$DMHA_DATA``, by default ``../shared/data`` beside the repo."""
    return Path(os.environ.get("DMHA_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    """Path of the real-speech folder; skips the test when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real speech not found at {path} (set DMHA_DATA)")
    return path
