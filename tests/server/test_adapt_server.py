"""Site adaptation through a real server: *Train* on a few corrected cases reports its cross-validated decision."""

from __future__ import annotations

import json

import pytest
import requests

from brain_tumor_dev.server_process import copy_studies
from brain_tumor_mri.layout import list_cases

from .conftest import wait_training
from .harness import Server

pytestmark = pytest.mark.server

#: small patches and no loader workers keep the folds and the final run to seconds on a CPU
ADAPT_CONF = {"train_patch": "32", "train_workers": "0", "train_cv_folds": "2"}


@pytest.fixture()
def adapt_server(imported_studies, tmp_path):
    srv = Server(copy_studies(imported_studies, tmp_path / "studies"), {"models": "segmentation", **ADAPT_CONF},
                 env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})  # fmt: skip
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_train_reports_the_cross_validated_decision(adapt_server):
    srv, client = adapt_server, adapt_server.client
    labelled = sorted(c for c in list_cases(srv.studies, kind="3d")
                      if (srv.studies / "labels" / "final" / f"{c}.nii.gz").is_file())  # fmt: skip
    assert len(labelled) >= 2
    info = client.info()
    assert info["trainers"]["segmentation"]["config"]["adapt"] is True
    before = client.infer("segmentation", labelled[0], {})[1]["model_version"]
    client.train_start("segmentation", {"max_epochs": 1})  # fine-tunes the served model: site adaptation
    task = wait_training(srv)
    assert task["status"] == "DONE", json.dumps(task, default=str)[:2000]
    stats = client.info()["train_stats"]["segmentation"]
    basis = stats["decision_basis"]
    assert basis["rule"] == "cross_validated" and basis["folds"] == 2 and basis["n_cases"] == len(labelled)
    held = sorted(c for fold in basis["per_fold"] for c in fold["held_out"])
    assert held == labelled, "every labelled case is judged once, by a candidate that never saw it"
    for fold in basis["per_fold"]:
        assert set(fold["before"]) == set(fold["after"]) == set(fold["held_out"])
        assert not set(fold["train"]) & set(fold["held_out"])
    assert basis["margin"] == 0.01 and basis["original_domain"]["checked"] is False
    assert stats["published"] == (basis["verdict"] == "published") == (basis["gain"]["mean_gain"] > 0.01)
    # GET /train/ carries the same record in the task's log
    details = "\n".join(requests.get(f"{srv.url}/train/", timeout=30).json()["details"])
    assert "cross_validated" in details and "site_before" in details
    after = client.infer("segmentation", labelled[0], {})[1]["model_version"]
    assert (after != before) == stats["published"]
    bad = requests.post(f"{srv.url}/train/segmentation", json={"cv_folds": 1}, timeout=30)
    assert bad.status_code == 422 and "cv_folds" in bad.text
    assert srv.alive()
