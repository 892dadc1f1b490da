"""Bad input gets a 4xx naming the problem; the server stays up; the datastore is unchanged."""

from __future__ import annotations

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest
import requests

from brain_tumor_mri.layout import list_cases

from .harness import Server, copy_studies, snapshot

pytestmark = pytest.mark.server


def _nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    return gzip.compress(img.to_bytes(), compresslevel=1)


@pytest.fixture(scope="module")
def bad_server(imported_studies, tmp_path_factory):
    """A datastore with a few spoiled cases, served with auto-scoring off."""
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("bad") / "studies")
    ids = list_cases(studies, kind="3d")
    (studies / "cases" / ids[0] / "t2w.nii.gz").unlink()  # missing sequence
    ref = nib.load(str(studies / f"{ids[1]}.nii.gz"))
    shifted = ref.affine.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj), shifted), str(studies / "cases" / ids[1] / "t1c.nii.gz"))
    data = np.asarray(ref.dataobj).astype(np.float32)
    data[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(data, ref.affine), str(studies / "cases" / ids[2] / "t1n.nii.gz"))
    srv = Server(studies, {"models": "segmentation"}, env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        srv.spoiled = ids[:3]  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def unchanged(bad_server):
    """Assert the datastore (files and registered objects) is the same after the test."""
    files, objects = snapshot(bad_server.studies), bad_server.client.datastore()["objects"]
    yield
    assert snapshot(bad_server.studies) == files
    assert bad_server.client.datastore()["objects"] == objects
    assert bad_server.alive()
    assert bad_server.client.info()["models"]["segmentation"]


def _infer(srv, image, **kw):
    return requests.post(
        f"{srv.url}/infer/segmentation",
        params={"image": image},
        data={"params": json.dumps({"result_extension": ".nrrd"})},
        timeout=120,
        **kw,
    )


def _expect(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, detail


def test_missing_sequence(bad_server, unchanged):
    _expect(_infer(bad_server, bad_server.spoiled[0]), 422, "missing sequence(s): t2w")


def test_mismatched_geometry(bad_server, unchanged):
    _expect(_infer(bad_server, bad_server.spoiled[1]), 422, "t1c", "affine differs")


def test_nan_voxels(bad_server, unchanged):
    _expect(_infer(bad_server, bad_server.spoiled[2]), 422, "t1n.nii.gz", "NaN or Inf")


def test_2d_image_sent_to_3d_model(bad_server, unchanged):
    png = next(c for c in list_cases(bad_server.studies, kind="2d"))
    _expect(_infer(bad_server, png), 422, "is a 2D image", "four sequences")
    flat = _nifti_bytes(np.ones((64, 64), np.float32))
    r = requests.post(
        f"{bad_server.url}/infer/segmentation",
        files={"file": ("slice.nii.gz", flat)},
        data={"params": "{}"},
        timeout=60,
    )
    _expect(r, 422, "expected a 3D image")


@pytest.mark.parametrize("what", ["corrupt", "truncated", "huge"])
def test_bad_uploads(bad_server, unchanged, what):
    good = _nifti_bytes(np.ones((32, 32, 32), np.float32))
    body = {"corrupt": b"\x00garbage" * 100, "truncated": good[: len(good) // 2]}.get(what)
    if what == "huge":  # a header that claims 2000^3 voxels
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((2000, 2000, 2000))
        hdr.set_data_dtype(np.uint8)
        raw = io.BytesIO()
        raw.write(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
        body = gzip.compress(raw.getvalue())
    r = requests.post(
        f"{bad_server.url}/infer/segmentation", files={"file": ("x.nii.gz", body)}, data={"params": "{}"}, timeout=60
    )
    words = {"corrupt": ["cannot read image"], "truncated": ["cannot read image"], "huge": ["voxels", "accepted"]}
    _expect(r, 422, *words[what])
    r = requests.put(
        f"{bad_server.url}/datastore/image",
        params={"image": f"bad-{what}"},
        files={"file": ("x.nii.gz", body)},
        data={"params": "{}"},
        timeout=60,
    )
    _expect(r, 422, "add image", *words[what])


def _put_label(srv, image, body, params=None, tag="final"):
    return requests.put(
        f"{srv.url}/datastore/label",
        params={"image": image, "tag": tag},
        files={"label": ("label.nii.gz", body)},
        data={"params": json.dumps(params or {})},
        timeout=60,
    )


def _case_label(srv, value_patch=None):
    case_id = next(c for c in list_cases(srv.studies, kind="3d") if c not in srv.spoiled)
    ref = nib.load(str(srv.studies / f"{case_id}.nii.gz"))
    label = np.zeros(ref.shape, np.uint8)
    label[20:30, 20:30, 20:30] = 2
    if value_patch is not None:
        label[0, 0, 0] = value_patch
    return case_id, _nifti_bytes(label, ref.affine)


def test_bad_labels(bad_server, unchanged):
    case_id, body = _case_label(bad_server, value_patch=9)
    _expect(_put_label(bad_server, case_id, body), 422, "unknown label values [9]")
    _expect(_put_label(bad_server, case_id, b""), 422, "empty file")
    case_id, body = _case_label(bad_server)
    _expect(_put_label(bad_server, case_id, body[: len(body) // 2]), 422, "cannot read image")
    wrong = _nifti_bytes(np.zeros((10, 10, 10), np.uint8))
    _expect(_put_label(bad_server, case_id, wrong), 422, "shape (10, 10, 10) differs")
    _expect(_put_label(bad_server, case_id, body, {"label_info": [{"name": "cyst", "idx": 2}]}), 422, "segment 'cyst'")


@pytest.mark.parametrize(
    "image, tag, status", [("../escape", "final", 422), ("x/../../etc", "final", 422), ("no-such-case", "final", 404)]
)
def test_path_components_in_ids(bad_server, unchanged, image, tag, status):
    _, body = _case_label(bad_server)
    r = _put_label(bad_server, image, body, tag=tag)
    assert r.status_code == status, r.text
    case_id, body = _case_label(bad_server)
    _expect(_put_label(bad_server, case_id, body, tag="../../x"), 422, "invalid case id")
    assert not (bad_server.studies.parent / "escape.nii.gz").exists()
