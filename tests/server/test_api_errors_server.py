"""Every bad request the issue measured (and its neighbours) gets a 4xx naming the problem.

One real server; each case asserts the status AND the message, that the message carries
no server path, and (fixture ``unchanged``) that the datastore and the server's temp
folder are as before and the server still answers.
"""

from __future__ import annotations

import io
import json
import time

import pytest
import requests

from brain_tumor_mri.layout import list_cases

from .harness import Server, copy_studies, isolated_env, snapshot, tree_entries

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def api_server(imported_studies, tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    studies = copy_studies(imported_studies, work / "studies")
    srv = Server(studies, {"models": "all"}, env=isolated_env(work))
    try:
        srv.wait_ready()
        srv.tmp = work / "tmp"  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def unchanged(api_server):
    """The datastore's files and records and the server's temp folder are the same afterwards."""
    files, objects = snapshot(api_server.studies), api_server.client.datastore()["objects"]
    temp = tree_entries(api_server.tmp)
    yield
    assert snapshot(api_server.studies) == files
    assert api_server.client.datastore()["objects"] == objects
    assert tree_entries(api_server.tmp) == temp, "a temp file was left behind"
    assert api_server.alive()


def _case(srv) -> str:
    return list_cases(srv.studies, kind="3d")[0]


def _unlabelled(srv) -> str:
    objects = srv.client.datastore()["objects"]
    return next(c for c in list_cases(srv.studies, kind="3d") if "final" not in objects[c].get("labels", {}))


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


# (name, request builder, status, words the message must contain)
CASES = [
    ("params not JSON", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}", {"data": {"params": "not json"}}),
     422, ["params: not valid JSON"]),
    ("params not an object", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}", {"data": {"params": "[1]"}}),
     422, ["params: expected a JSON object, got an array"]),
    ("unknown model", lambda s: ("POST", f"/infer/nosuch?image={_case(s)}", {"data": {"params": "{}"}}),
     404, ["unknown model 'nosuch'", "classification, segmentation"]),
    ("unknown strategy", lambda s: ("POST", "/activelearning/nosuch", {"json": {}}),
     404, ["unknown strategy 'nosuch'", "epistemic, first, random, tta"]),
    ("unknown scoring method", lambda s: ("POST", "/scoring/nosuch", {}),
     404, ["unknown scoring method 'nosuch'", "epistemic, tta"]),
    ("delete unknown image", lambda s: ("DELETE", "/datastore/image?id=nosuch", {}),
     404, ["image 'nosuch' not found in the datastore"]),
    ("delete image with empty id", lambda s: ("DELETE", "/datastore/image?id=", {}),
     422, ["image id: missing"]),
    ("result_extension .exe", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}",
                                         {"data": {"params": json.dumps({"result_extension": ".exe"})}}),
     422, ["result_extension '.exe' not supported", ".nii.gz, .nii, .nrrd, .seg.nrrd"]),
    ("result_dtype complex128", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}",
                                           {"data": {"params": json.dumps({"result_dtype": "complex128"})}}),
     422, ["result_dtype 'complex128' not supported", "uint8"]),
    ("params overriding the image", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}",
                                               {"data": {"params": json.dumps({"image": "/etc/passwd"})}}),
     422, ["['image'] cannot be set in params"]),
    ("infer without any image", lambda s: ("POST", "/infer/segmentation", {"data": {"params": "{}"}}),
     422, ["give image (a datastore id), file (an upload) or session_id"]),
    ("infer on unknown image", lambda s: ("POST", "/infer/segmentation?image=nosuch", {"data": {"params": "{}"}}),
     404, ["image 'nosuch' not found in the datastore"]),
    ("infer with an input label", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}",
                                             {"data": {"params": "{}"}, "files": {"label": ("l.nii.gz", b"x")}}),
     422, ["take no input label"]),
    ("dicom_seg without DICOMweb", lambda s: ("POST", f"/infer/segmentation?image={_case(s)}&output=dicom_seg",
                                              {"data": {"params": "{}"}}),
     422, ["dicom_seg answers need a DICOMweb datastore"]),
    ("training max_epochs -1", lambda s: ("POST", "/train/segmentation", {"json": {"max_epochs": -1}}),
     422, ["max_epochs -1: expected an integer in [1, 10000]"]),
    ("training lr as text", lambda s: ("POST", "/train/segmentation", {"json": {"lr": "fast"}}),
     422, ["lr 'fast': expected a number"]),
    ("training unknown option", lambda s: ("POST", "/train/classification", {"json": {"epochs": 3}}),
     422, ["unknown key(s) ['epochs'] for classification"]),
    ("training unknown model", lambda s: ("POST", "/train/nosuch", {"json": {}}),
     404, ["unknown trainer 'nosuch'"]),
    ("training run_sync", lambda s: ("POST", "/train/segmentation?run_sync=true", {"json": {}}),
     422, ["run_sync: training runs in the background", "GET /train/"]),
    ("train-all with a bad option", lambda s: ("POST", "/train/", {"json": {"segmentation": {"max_epochs": 0}}}),
     422, ["max_epochs 0"]),
    ("train-all without a body", lambda s: ("POST", "/train/", {}),
     422, ["training every model needs a JSON body"]),
    ("train-all naming an unknown model", lambda s: ("POST", "/train/", {"json": {"nosuch": {}}}),
     404, ["unknown trainer 'nosuch'"]),
    ("scoring-all without a body", lambda s: ("POST", "/scoring/", {}),
     422, ["scoring with every method needs a JSON body"]),
    ("scoring run_sync", lambda s: ("POST", "/scoring/epistemic?run_sync=true", {}),
     422, ["run_sync: scoring runs in the background"]),
    ("image info not JSON", lambda s: ("PUT", f"/datastore/image/info?image={_case(s)}", {"data": {"info": "{"}}),
     422, ["info: not valid JSON"]),
    ("image info of unknown image", lambda s: ("PUT", "/datastore/image/info?image=nosuch", {"data": {"info": "{}"}}),
     404, ["image 'nosuch' not found"]),
    ("label info of missing label", lambda s: ("PUT", f"/datastore/label/info?label={_unlabelled(s)}&tag=final",
                                               {"data": {"info": "{}"}}),
     404, ["no 'final' label for image"]),
    ("delete missing label", lambda s: ("DELETE", f"/datastore/label?id={_unlabelled(s)}&tag=final", {}),
     404, ["no 'final' label for image"]),
    ("save label with params not JSON", lambda s: ("PUT", f"/datastore/label?image={_case(s)}",
                                                   {"data": {"params": "{x"}, "files": {"label": ("l.nii.gz", b"x")}}),
     422, ["params: not valid JSON"]),
    ("save label of unknown type", lambda s: ("PUT", f"/datastore/label?image={_case(s)}",
                                              {"data": {"params": "{}"}, "files": {"label": ("l.exe", b"x")}}),
     422, ["label: file type not accepted"]),
    ("add image with params not JSON", lambda s: ("PUT", "/datastore/image?image=new-case",
                                                  {"data": {"params": "nope"}, "files": {"file": ("x.png", _png())}}),
     422, ["params: not valid JSON"]),
    ("add image of unknown type", lambda s: ("PUT", "/datastore/image?image=new-case",
                                             {"data": {"params": "{}"}, "files": {"file": ("x.exe", b"MZ")}}),
     422, ["file: file type not accepted"]),
    ("add image under a taken id", lambda s: ("PUT", f"/datastore/image?image={_case(s)}",
                                              {"data": {"params": "{}"}, "files": {"file": ("x.png", _png())}}),
     409, ["already exists; delete it first"]),
    ("add a picture that is not one", lambda s: ("PUT", "/datastore/image?image=new-case",
                                                 {"data": {"params": "{}"}, "files": {"file": ("x.png", b"PNG..")}}),
     422, ["cannot read picture 'x.png'"]),
    ("add image with a path as id", lambda s: ("PUT", "/datastore/image?image=../escape",
                                               {"data": {"params": "{}"}, "files": {"file": ("x.png", _png())}}),
     422, ["invalid case id"]),
    ("GPU info without a GPU", lambda s: ("GET", "/logs/gpu", {}),
     404, ["no NVIDIA GPU tools on this server"]),
    ("unknown session", lambda s: ("GET", "/session/nosuch", {}),
     404, ["session 'nosuch' not found"]),
    ("session from an archive", lambda s: ("PUT", "/session/?uncompress=true", {"files": {"files": ("a.zip", b"PK")}}),
     422, ["archives are not accepted"]),
    ("whole-slide inference", lambda s: ("POST", "/infer/wsi_v2/segmentation", {"json": {}}),
     404, ["whole-slide (pathology) inference is not offered"]),
    ("batch inference", lambda s: ("POST", "/batch/infer/segmentation", {"json": {}}),
     404, ["batch inference is not offered"]),
    ("model weights of unknown model", lambda s: ("GET", "/model/nosuch", {}),
     404, ["unknown model 'nosuch'"]),
    ("replace weights with a non-archive", lambda s: ("PUT", "/model/segmentation",
                                                      {"files": {"file": ("w.pt", b"not a zip")}}),
     422, ["not a ZIP archive"]),
    ("delete the served weights", lambda s: ("DELETE", "/model/segmentation", {}),
     405, ["deleting the served weights is not supported", "PUT /model/segmentation"]),
]  # fmt: skip


@pytest.mark.parametrize("name, build, status, words", CASES, ids=[c[0] for c in CASES])
def test_bad_request_answers_4xx_naming_the_problem(api_server, unchanged, name, build, status, words):
    method, path, kwargs = build(api_server)
    r = requests.request(method, f"{api_server.url}{path}", timeout=60, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, detail
    assert str(api_server.studies.parent) not in detail and "/tmp" not in detail and "/root" not in detail, detail


def test_no_training_or_scoring_run_was_started(api_server):
    """The refused training/scoring requests above never reached a run."""
    for what in ("train", "scoring"):
        r = requests.get(f"{api_server.url}/{what}/", timeout=30)
        assert r.status_code == 404 and "No" in r.json()["detail"], r.text


def test_schema_lists_only_what_the_app_serves(api_server):
    paths = requests.get(f"{api_server.url}/openapi.json", timeout=30).json()["paths"]
    assert not [p for p in paths if "wsi" in p or p.startswith("/batch")]
    assert {"/infer/{model}", "/datastore/label", "/model/{model}", "/session/{session_id}"} <= set(paths)


def test_slicer_client_calls_still_work(api_server):
    """The client Slicer uses: info, next sample, upload (deprecated path), session round trip."""
    client = api_server.client
    assert client.info()["models"]["segmentation"]
    assert client.next_sample("first", {})["id"]
    png = api_server.studies.parent / "slicer-upload.png"
    png.write_bytes(_png())
    assert client.upload_image(str(png), image_id="slicer-upload")["image"] == "slicer-upload"
    session = client.create_session(str(png))["session_id"]
    assert client.get_session(session)["name"] == session
    client.remove_session(session)
    r = requests.delete(f"{api_server.url}/datastore/image", params={"id": "slicer-upload"}, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20  # the datastore drops the record when its file watcher sees the removal
    while "slicer-upload" in client.datastore()["objects"]:
        assert time.monotonic() < deadline, "removed image still listed after 20 s"
        time.sleep(0.2)
    assert not (api_server.studies / "slicer-upload.png").exists()
