"""Fixtures of the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_helpers import make_training_folder


@pytest.fixture
def training_folder(tmp_path) -> Path:
    return make_training_folder(tmp_path / "trained")
