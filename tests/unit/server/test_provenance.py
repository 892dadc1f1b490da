"""Label provenance in the datastore: every save kept, who and which model, latest is final."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException
from monailabel.config import settings

from brain_tumor_mri.server.datastore import BrainTumorDatastore, clean_partial_files
from brain_tumor_mri.server.principal import Principal, reset_principal, set_principal, unverified
from brain_tumor_mri.server.provenance import record_prediction

SHAPE = (8, 8, 8)


@pytest.fixture
def store(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), str(studies / "c1.nii.gz"))
    return BrainTumorDatastore(str(studies), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)


def _label(tmp_path, value: int):
    data = np.zeros(SHAPE, np.uint8)
    data[2:5, 2:5, 2:5] = value
    path = tmp_path / f"label{value}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path, data


def _save_as(store, who, path, params=None):
    token = set_principal(who)
    try:
        store.save_label("c1", str(path), "final", dict(params or {}))
    finally:
        reset_principal(token)


def test_a_second_save_keeps_the_first_and_the_latest_is_final(store, tmp_path):
    alice = Principal("alice", verified=True)
    bob = Principal("bob", verified=True)
    first, first_data = _label(tmp_path, 1)
    second, second_data = _label(tmp_path, 2)
    record_prediction(store, "c1", "segmentation", "model-A", alice)
    _save_as(store, alice, first)
    _save_as(store, bob, second)

    history = store.label_history("c1", "final")
    records = history.records()
    assert [r["version"] for r in records] == [1, 2]
    assert [(r["saved_by"], r["verified"]) for r in records] == [("alice", True), ("bob", True)]
    assert records[0]["model_version"] == "model-A" and records[0]["model_version_source"] == "served"
    assert records[1]["model_version"] == "model-A" and records[1]["model_version_source"] == "served_to_another_user"
    assert np.array_equal(np.asarray(nib.load(str(history.file(1))).dataobj), first_data)
    final = store.get_label_uri("c1", "final")
    assert np.array_equal(np.asarray(nib.load(final).dataobj), second_data)
    assert history.file(2).stat().st_ino == (tmp_path / "studies/labels/final/c1.nii.gz").stat().st_ino  # no copy
    info = store.get_label_info("c1", "final")["provenance"]
    assert info["version"] == 2 and info["saved_by"] == "bob" and info["saved_at"].endswith("+00:00")
    assert len(info["sha256"]) == 64


def test_without_authentication_the_client_id_names_the_saver_unverified(store, tmp_path):
    path, _ = _label(tmp_path, 3)
    _save_as(store, unverified(None, "127.0.0.1"), path, {"client_id": "user-xyz", "model_version": "m-client"})
    (record,) = store.label_history("c1", "final").records()
    assert (record["saved_by"], record["verified"]) == ("user-xyz", False)
    assert (record["model_version"], record["model_version_source"]) == ("m-client", "client")


def test_a_verified_user_cannot_be_renamed_by_client_id(store, tmp_path):
    path, _ = _label(tmp_path, 1)
    _save_as(store, Principal("alice", verified=True), path, {"client_id": "bob"})
    assert store.label_history("c1", "final").records()[0]["saved_by"] == "alice"


def test_provenance_cannot_be_edited_or_spoofed(store, tmp_path):
    path, _ = _label(tmp_path, 1)
    _save_as(store, Principal("alice", verified=True), path, {"provenance": {"saved_by": "mallory"}})
    assert store.get_label_info("c1", "final")["provenance"]["saved_by"] == "alice"
    with pytest.raises(HTTPException) as info:
        store.update_label_info("c1", "final", {"provenance": {"saved_by": "mallory"}})
    assert info.value.status_code == 422
    store.update_label_info("c1", "final", {"comment": "checked"})
    assert store.get_label_info("c1", "final")["comment"] == "checked"


def test_history_is_not_a_tag_and_leftovers_are_cleaned(store, tmp_path):
    path, _ = _label(tmp_path, 1)
    with pytest.raises(HTTPException, match="reserved"):
        store.save_label("c1", str(path), "history", {})
    _save_as(store, Principal("alice", verified=True), path)
    folder = tmp_path / "studies/labels/history/final/c1"
    (folder / ".versions.json.tmp123").write_text("{")
    assert clean_partial_files(tmp_path / "studies") == 1
    kw = {"extensions": settings.MONAI_LABEL_DATASTORE_FILE_EXT, "auto_reload": False}
    restarted = BrainTumorDatastore(str(tmp_path / "studies"), **kw)  # re-scans labels/* for tags
    assert restarted.status()["label_tags"] == {"final": 1}
    assert restarted.get_label_info("c1", "final")["provenance"]["version"] == 1
