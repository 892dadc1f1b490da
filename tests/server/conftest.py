"""Server-level fixtures: a datastore imported from ``sample-data/`` and a live server."""

from __future__ import annotations

import time

import pytest
import requests

from brain_tumor_dev.server_process import Server, copy_studies


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
    srv = Server(
        copy_studies(imported_studies, tmp_path / "studies"),
        {"models": "all"},
        env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"},
    )
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


#: Accounts of the local identity provider: name -> realm roles (password "pw-<name>").
AUTH_ACCOUNTS = {
    "alice": ["annotator"],
    "bob": ["annotator"],
    "rita": ["reviewer"],
    "adam": ["admin"],
    "uma": ["user"],
    "nora": [],
}


@pytest.fixture(scope="session")
def auth_realm():
    """A local OpenID Connect issuer (Keycloak-style realm) with the accounts above."""
    from brain_tumor_dev.oidc_issuer import ROLES, Account, LocalIssuer

    accounts = {name: Account(f"pw-{name}", [ROLES[r] for r in roles]) for name, roles in AUTH_ACCOUNTS.items()}
    with LocalIssuer(accounts=accounts) as issuer:
        yield issuer


@pytest.fixture(scope="session")
def auth_server(imported_studies, tmp_path_factory, auth_realm):
    """A server with authentication on, verifying tokens against ``auth_realm``."""
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("auth") / "studies")
    env = {**auth_realm.env(), "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
    srv = Server(studies, {"models": "segmentation"}, env=env)
    try:
        # the runner's own client reads as a plain user for the whole session
        srv.client.update_auth(
            {"token_type": "Bearer", "access_token": auth_realm.token("probe", ["monailabel-user"], 3600)}
        )
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
