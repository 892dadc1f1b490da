"""A whole 3D Slicer annotation session replayed with the requests the extension sends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from brain_tumor_mri.imageio import load_volume, save_label

from .conftest import wait_training

pytestmark = pytest.mark.server

SLICER_INFER = {"result_extension": ".nrrd", "result_dtype": "uint8"}


def test_annotation_session(private_server, tmp_path):
    srv, client = private_server, private_server.client
    info = client.info()
    assert {"segmentation", "classification"} <= set(info["models"]) and "segmentation" in info["trainers"]
    assert info["models"]["classification"]["type"] == "classification"

    sample = client.next_sample("first", {})
    case_id = sample["id"]
    assert sample["path"].endswith(f"{case_id}.nii.gz")
    r = requests.get(f"{srv.url}/datastore/image", params={"image": case_id}, timeout=60)
    assert r.status_code == 200 and len(r.content) > 1000
    (tmp_path / "image.nii.gz").write_bytes(r.content)
    image, affine = load_volume(tmp_path / "image.nii.gz")

    label_file, params = client.infer("segmentation", case_id, SLICER_INFER)
    label, label_affine = load_volume(label_file)
    assert label.shape == image.shape and np.allclose(label_affine, affine, atol=1e-4)
    first_version = params["model_version"]
    # the classifier is served too, so the segmentation answer carries the tumour type
    assert abs(sum(params["classification"]["probabilities"].values()) - 1) < 1e-4

    # the annotator corrects: here, the withheld reference truth stands in for the correction
    truth, _ = load_volume(next(srv.studies.glob(f"labels/reference/{case_id}.nii.gz")))
    corrected = save_label(tmp_path / "corrected.nrrd", truth.astype(np.uint8), affine)
    label_info = {"label_info": [{"name": n, "idx": i} for n, i in params["label_names"].items()]}
    client.save_label(case_id, str(corrected), tag="final", params=label_info)
    stored, _ = load_volume(srv.studies / "labels" / "final" / f"{case_id}.nii.gz")
    assert np.array_equal(stored, truth)
    for _ in range(6):
        nxt = client.next_sample("first", {})
        assert not nxt or nxt["id"] != case_id

    client.train_start("segmentation", {"max_epochs": 1, "init": "none"})
    task = wait_training(srv)
    assert task["status"] == "DONE", task.get("details")
    _, params2 = client.infer("segmentation", case_id, SLICER_INFER)
    assert params2["model_version"] != first_version

    _, raw = client.infer("classification", case_id, {})
    cls = json.loads(raw)  # the client hands back a JSON-only answer as bytes (as Slicer receives it)
    assert cls["best_guess"] in cls["probabilities"]
    assert cls["tumor_type"] in (cls["best_guess"], "uncertain", "other")  # the answer contract (README)
    assert cls["consistency"]["applied"], "a 3D answer is checked against the segmentation of the case"
    assert sum(cls["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    stored_info = client.datastore()["objects"][case_id]["image"]["info"]
    assert stored_info["classification"]["tumor_type"] == cls["tumor_type"]
