"""Retraining from corrections through a real server: publish, hot swap, stop, 429."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests

from brain_tumor_dev.server_process import copy_studies
from brain_tumor_mri.imageio import load_volume, save_label
from brain_tumor_mri.layout import list_cases

from .conftest import wait_training
from .harness import Server

pytestmark = pytest.mark.server

SLICER_LABEL_INFO = {
    "label_info": [
        {"name": "necrotic_core", "idx": 1},
        {"name": "edema", "idx": 2},
        {"name": "enhancing_tumor", "idx": 3},
    ]
}


#: Non-default training settings on the server's command line: they must reach the training run,
#: which MONAI Label starts in a subprocess of its own.
TRAIN_CONF = {"seed": "5", "train_amp": "false", "bf16": "off", "seg_spacing": "3", "train_patch": "64",
              "train_domain_random": "0.5", "train_workers": "0", "allow_missing_sequences": "true"}  # fmt: skip


@pytest.fixture()
def conf_server(imported_studies, tmp_path):
    """A server of its own, started with ``TRAIN_CONF``."""
    srv = Server(
        copy_studies(imported_studies, tmp_path / "studies"),
        {"models": "all", **TRAIN_CONF},
        env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _version(srv: Server, case_id: str) -> str:
    return srv.client.infer("segmentation", case_id, {})[1]["model_version"]


def test_corrections_retrain_with_the_servers_conf_and_hot_swap(conf_server, tmp_path):
    srv, client = conf_server, conf_server.client
    unlabelled = sorted(set(list_cases(srv.studies, kind="3d")) & set(client.datastore()["objects"]))
    case_id = next(c for c in unlabelled if not (srv.studies / "labels" / "final" / f"{c}.nii.gz").exists())
    before = _version(srv, case_id)
    # a "corrected" label as Slicer saves it: NRRD with segment names in label_info
    reference = next(srv.studies.glob(f"labels/reference/{case_id}.nii.gz"))
    truth, affine = load_volume(reference)
    corrected = save_label(tmp_path / "corrected.nrrd", truth.astype(np.uint8), affine)
    client.save_label(case_id, str(corrected), tag="final", params=SLICER_LABEL_INFO)
    assert next_ids(client, 8).isdisjoint({case_id}), "a labelled case was offered again"

    client.train_start("segmentation", {"max_epochs": 1, "init": "none"})
    # MONAI Label answers 429 once the first run's process exists (a request that arrives while
    # the first is still only SUBMITTED is queued behind it), so wait for RUNNING
    deadline = time.monotonic() + 60
    while requests.get(f"{srv.url}/train/", timeout=30).json().get("status") != "RUNNING":
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    r = requests.post(f"{srv.url}/train/segmentation", json={}, timeout=30)
    assert r.status_code == 429, r.text
    # inference keeps answering while training runs
    assert _version(srv, case_id) == before
    task = wait_training(srv)
    assert task["status"] == "DONE", json.dumps(task, default=str)[:2000]
    stats = client.info()["train_stats"]["segmentation"]
    assert stats["status"] in ("finished", "early_stopped") and stats["published"] is True
    assert 0.0 <= stats["best_metric"] <= 1.0
    after = _version(srv, case_id)
    assert after != before and after == stats["model_version"]
    # what the run decided on is reported, and the server's --conf reached the training subprocess
    assert stats["decision_basis"]["rule"] == "beats_initial" and stats["decision_basis"]["n_val"] >= 1
    assert any("decision_basis" in line for line in task["details"])
    meta = json.loads((srv.studies / "model" / "segmentation.json").read_text(encoding="utf-8"))
    options = meta["training"]["options"]
    assert (options["seed"], options["amp"], options["bf16"], options["domain_random"]) == (5, False, "off", 0.5)
    assert options["allow_missing"] is True and options["workers"] == 0
    assert meta["spacing"] == 3.0 and meta["patch"] == [64, 64, 64]


def next_ids(client, n: int) -> set[str]:
    ids = set()
    for _ in range(n):
        res = client.next_sample("first", {})
        if not res:
            break
        ids.add(res["id"])
    return ids


def test_stopped_training_keeps_previous_model(private_server):
    srv, client = private_server, private_server.client
    case_id = sorted(client.datastore()["objects"])[0]
    before = _version(srv, case_id)
    client.train_start("segmentation", {"max_epochs": 200, "init": "none"})
    deadline = time.monotonic() + 120
    while True:
        task = requests.get(f"{srv.url}/train/", timeout=30).json()
        if task.get("status") == "RUNNING" and any("training on" in line for line in task.get("details", [])):
            break
        assert time.monotonic() < deadline, f"training never reached its epoch loop: {task}"
        time.sleep(1)
    client.train_stop()
    task = wait_training(srv, 60)
    assert task["status"] == "STOPPED"
    assert _version(srv, case_id) == before
    model_dir = srv.studies / "model"
    assert not list(model_dir.glob("segmentation.pt")), "a stopped run must not publish"
    assert not list(model_dir.glob(".segmentation*")), "no half-written weights left behind"
    assert srv.alive()
