"""Server-level fixtures: a datastore imported from ``sample-data/`` and a live server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

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


@pytest.fixture()
def private_server(imported_studies, tmp_path):
    """A server of its own over a fresh copy, for tests that change the model or datastore."""
    srv = Server(copy_studies(imported_studies, tmp_path / "studies"), {"models": "all"},
                 env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def wait_training(srv: Server, timeout: float = 420) -> dict:
    """Poll ``GET /train/`` until the last task ended; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = requests.get(f"{srv.url}/train/", timeout=30).json()
        if task and task.get("status") in ("DONE", "ERROR", "STOPPED"):
            return task
        time.sleep(2)
    raise TimeoutError(f"training did not finish in {timeout}s:\n{srv.log_tail()}")
