"""Server-level fixtures: a datastore imported from ``sample-data/`` and a live server."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain_tumor_mri.server_process import REPO, Server, copy_studies


@pytest.fixture(scope="session")
def imported_studies(tmp_path_factory) -> Path:
    """``sample-data/`` imported once per session with the project's own importer."""
    from brain_tumor_mri.data.importers import import_dataset

    dst = tmp_path_factory.mktemp("imported") / "studies"
    import_dataset(REPO / "sample-data", dst, unlabelled=4)
    return dst


@pytest.fixture(scope="session")
def server(imported_studies, tmp_path_factory):
    """One shared server over a working copy of the sample datastore."""
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("shared") / "studies")
    srv = Server(studies)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
