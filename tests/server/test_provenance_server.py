"""Two annotators save the same case on a real server: both versions kept, who and which model recorded."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from brain_tumor_mri.imageio import load_volume, save_label
from brain_tumor_mri.layout import list_cases

from .conftest import AUTH_ACCOUNTS

pytestmark = pytest.mark.server

SLICER_LABEL_INFO = {"label_info": [{"name": "necrotic_core", "idx": 1}, {"name": "edema", "idx": 2}]}


def _client(srv, tmp_path, name: str) -> MONAILabelClient:
    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path), client_id="user-xyz")
    client.update_auth(client.auth_token(name, f"pw-{name}"))
    return client


def _voxels(path) -> np.ndarray:
    return np.rint(load_volume(path)[0]).astype(np.uint8)


def test_a_second_annotator_adds_a_version_and_a_reviewer_sees_both(auth_server, tmp_path):
    srv = auth_server
    assert {"alice", "bob", "rita"} <= set(AUTH_ACCOUNTS)
    alice, bob, rita = (_client(srv, tmp_path, n) for n in ("alice", "bob", "rita"))
    objects = alice.datastore()["objects"]
    case_id = sorted(c for c in list_cases(srv.studies, kind="3d") if "final" not in objects[c]["labels"])[-1]

    predicted, params = alice.infer("segmentation", case_id, {"result_extension": ".nii.gz"})
    data, affine = load_volume(predicted)
    first = np.rint(data).astype(np.uint8)
    first[first == 1] = 2  # alice's correction
    alice.save_label(case_id, str(save_label(tmp_path / "alice.nii.gz", first, affine)), "final", SLICER_LABEL_INFO)
    second = np.zeros_like(first)
    second[10:20, 10:20, 10:20] = 1  # bob draws his own
    bob.save_label(case_id, str(save_label(tmp_path / "bob.nii.gz", second, affine)), "final", SLICER_LABEL_INFO)

    history = requests.get(
        f"{srv.url}/datastore/label/history", params={"image": case_id}, headers=rita._headers, timeout=30
    )
    assert history.status_code == 200, history.text
    versions = history.json()["versions"]
    assert history.json()["final_version"] == 2
    assert [(v["version"], v["saved_by"], v["verified"]) for v in versions] == [(1, "alice", True), (2, "bob", True)]
    assert [v["model_version"] for v in versions] == [params["model_version"]] * 2
    assert [v["model_version_source"] for v in versions] == ["served", "served_to_another_user"]

    old = requests.get(
        f"{srv.url}/datastore/label/version",
        params={"image": case_id, "version": 1},
        headers=rita._headers,
        timeout=30,
    )
    assert old.status_code == 200
    (tmp_path / "v1.nii.gz").write_bytes(old.content)
    assert np.array_equal(_voxels(tmp_path / "v1.nii.gz"), first)  # alice's version is not lost
    final = rita.download_label(case_id, "final")  # what Slicer and training read: the latest
    assert np.array_equal(_voxels(final), second)
    assert np.array_equal(_voxels(srv.studies / "labels" / "final" / f"{case_id}.nii.gz"), second)
    info = rita.datastore()["objects"][case_id]["labels"]["final"]["info"]["provenance"]
    assert (info["version"], info["saved_by"]) == (2, "bob")

    refused = requests.get(
        f"{srv.url}/datastore/label/history", params={"image": case_id}, headers=alice._headers, timeout=30
    )
    assert refused.status_code == 403 and "monailabel-reviewer" in refused.json()["detail"]
    missing = requests.get(
        f"{srv.url}/datastore/label/version",
        params={"image": case_id, "version": 9},
        headers=rita._headers,
        timeout=30,
    )
    assert missing.status_code == 404


def test_without_authentication_the_client_id_is_recorded_unverified(server, tmp_path):
    """On the open server a save is attributed to the client id the client sends (Slicer: user-xyz)."""
    final = sorted((server.studies / "labels" / "final").glob("*.nii.gz"))[0]
    case_id = final.name[: -len(".nii.gz")]
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    before = _voxels(final)
    client.save_label(case_id, str(final), "final", {})  # the same content again: a new version, same label
    info = client.datastore()["objects"][case_id]["labels"]["final"]["info"]["provenance"]
    assert (info["saved_by"], info["verified"]) == ("user-xyz", False)
    assert np.array_equal(_voxels(final), before)
