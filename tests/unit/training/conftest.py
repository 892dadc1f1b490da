"""Fixtures of the training tests: a small labelled datastore and its case specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.segmentation import make_datastore


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 32^3 cases at 3 mm (shared by a module's tests; do not modify)."""
    return make_datastore(tmp_path_factory.mktemp("studies"))


@pytest.fixture()
def own_studies(tmp_path: Path) -> Path:
    """A datastore of its own, for tests that change files."""
    return make_datastore(tmp_path / "studies")
