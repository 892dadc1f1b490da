"""Rejected uploads leave nothing behind, oversized ones get 413, and no answer shows a server path."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from brain_tumor_mri.layout import list_cases

from .harness import Server, copy_studies, tree_entries

pytestmark = pytest.mark.server

LIMIT_MB = 2
TEMP_NAME = re.compile(r"tmp[a-z0-9_]{6,}")


@pytest.fixture(scope="module")
def small_limit_server(imported_studies, tmp_path_factory):
    """A server with its own temp folder (to count) and a 2 MB upload limit."""
    base = tmp_path_factory.mktemp("uploads")
    (base / "tmp").mkdir()
    env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "TMPDIR": str(base / "tmp")}
    srv = Server(
        copy_studies(imported_studies, base / "studies"),
        {"models": "segmentation", "max_upload_mb": str(LIMIT_MB)},
        env=env,
    )
    try:
        srv.wait_ready()
        srv.temp = base / "tmp"  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def temp_entries(srv) -> list[str]:
    return tree_entries(srv.temp)


def wait_for_temp(srv, expected: list[str], timeout: float = 15.0) -> None:
    """Requests clean up just after their answer is sent: wait for that, fail if it never happens."""
    deadline = time.monotonic() + timeout
    while temp_entries(srv) != expected:
        assert time.monotonic() < deadline, f"temp folder not back to {expected}: {temp_entries(srv)}"
        time.sleep(0.1)


def _assert_clean_message(srv, text: str, *must: str) -> None:
    for word in must:
        assert word in text, text
    for server_path in (str(srv.temp), str(srv.studies), "/tmp/", str(Path.home())):
        assert server_path not in text, text
    assert not TEMP_NAME.search(text), text


def _gz(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), compresslevel=1)


def test_a_barrage_of_bad_inputs_leaves_the_temp_folder_as_it_was(small_limit_server, tmp_path):
    srv = small_limit_server
    before = temp_entries(srv)
    case_id = list_cases(srv.studies, kind="3d")[0]
    good = _gz(np.ones((16, 16, 16), np.float32))
    bad_bodies = {"corrupt-scan.nii.gz": b"\x00garbage" * 100, "truncated-scan.nii.gz": good[: len(good) // 2]}
    for name, body in bad_bodies.items():
        for _ in range(3):
            r = requests.post(
                f"{srv.url}/infer/segmentation", files={"file": (name, body)}, data={"params": "{}"}, timeout=60
            )
            assert r.status_code == 422, r.text
            _assert_clean_message(srv, r.json()["detail"], name, "cannot read image")
            r = requests.put(
                f"{srv.url}/datastore/", params={"image": "junk"}, files={"file": (name, body)}, timeout=60
            )
            assert r.status_code == 422, r.text
            _assert_clean_message(srv, r.json()["detail"], name, "add image")
            r = requests.put(f"{srv.url}/datastore/label", params={"image": case_id, "tag": "final"},
                             files={"label": (name, body)}, data={"params": "{}"}, timeout=60)  # fmt: skip
            assert r.status_code == 422, r.text
            _assert_clean_message(srv, r.json()["detail"], name, "save label")
    flat = tmp_path / "slice.nii.gz"
    flat.write_bytes(_gz(np.ones((32, 32), np.float32)))
    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path))
    with pytest.raises(Exception, match="expected a 3D image") as info:  # through the client, as Slicer sends files
        client.infer("segmentation", "", {}, file=str(flat))
    assert not TEMP_NAME.search(str(info.value))
    wait_for_temp(srv, before)
    assert "junk" not in client.datastore()["objects"]


def test_oversized_uploads_get_413_and_are_not_stored(small_limit_server):
    srv = small_limit_server
    before = temp_entries(srv)
    big = b"\0" * (3 * 2**20)
    r = requests.post(
        f"{srv.url}/infer/segmentation", files={"file": ("big.nii.gz", big)}, data={"params": "{}"}, timeout=60
    )
    assert r.status_code == 413 and f"at most {LIMIT_MB} MB" in r.json()["detail"], r.text

    def chunked():  # no Content-Length: the server counts while it reads
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="stream.nii.gz"\r\n\r\n'
        for _ in range(40):
            yield b"\1" * 100_000
        yield b"\r\n--b--\r\n"

    r = requests.put(f"{srv.url}/datastore/", params={"image": "stream"}, data=chunked(),
                     headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)  # fmt: skip
    assert r.status_code == 413 and "upload too large" in r.json()["detail"], r.text
    wait_for_temp(srv, before)
    assert not (srv.studies / "stream.nii.gz").exists()
    assert srv.alive() and srv.client.info()["models"]["segmentation"]


def test_accepted_requests_leave_no_temp_files_either(small_limit_server, tmp_path):
    srv = small_limit_server
    before = temp_entries(srv)
    case_id = list_cases(srv.studies, kind="3d")[0]
    label, params = srv.client.infer("segmentation", case_id, {"result_extension": ".nrrd"})
    srv.client.save_label(case_id, label, "final", {"label_info": []})
    export = requests.get(f"{srv.url}/datastore/dataset", params={"limit_cases": 2}, timeout=120)
    assert export.status_code == 200 and export.content[:2] == b"PK"  # MONAI Label never deletes this ZIP itself
    wait_for_temp(srv, before)
    assert json.loads(json.dumps(params))["model_version"]
