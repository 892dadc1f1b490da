"""Shared fixtures: repository paths and a generated-data cache."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def imported_studies(tmp_path_factory) -> Path:
    """``sample-data/`` imported once per session with the project's own importer."""
    from brain_tumor_mri.data.importers import import_dataset

    dst = tmp_path_factory.mktemp("imported") / "studies"
    import_dataset(REPO / "sample-data", dst, unlabelled=4)
    return dst
