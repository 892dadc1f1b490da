"""``/model/{model}`` on a real server: download the serving weights, replace them safely, never delete."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import requests

from brain_tumor_mri.layout import list_cases

from .harness import Server, copy_studies

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def model_server(imported_studies, tmp_path_factory):
    """A server of this module's own: its tests replace the served model (in file order)."""
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("models") / "studies")
    srv = Server(studies, {"models": "all"}, env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _download(srv, model: str) -> zipfile.ZipFile:
    r = requests.get(f"{srv.url}/model/{model}", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert f"{model}-weights.zip" in r.headers["content-disposition"]
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_download_gives_the_serving_weights_with_their_sidecars(model_server, repo_root):
    seg = _download(model_server, "segmentation")
    assert sorted(seg.namelist()) == ["segmentation.json", "segmentation.pt"]
    shipped = repo_root / "model_weights"
    assert seg.read("segmentation.pt") == (shipped / "segmentation.pt").read_bytes()
    meta = json.loads(seg.read("segmentation.json"))
    assert meta["sha256"] == hashlib.sha256(seg.read("segmentation.pt")).hexdigest()
    shipped_meta = json.loads((shipped / "segmentation.json").read_text())
    assert shipped_meta["training"]["options"]["studies"].startswith("/")  # provenance recorded with paths...
    assert meta["training"]["options"]["studies"] == Path(shipped_meta["training"]["options"]["studies"]).name
    assert '"/' not in seg.read("segmentation.json").decode()  # ...leaves the server as folder names
    clf = _download(model_server, "classification")
    assert sorted(clf.namelist()) == [f"classification_{k}.{e}" for k in ("2d", "3d") for e in ("json", "pt")]
    info = requests.get(f"{model_server.url}/model/info/segmentation", timeout=30).json()
    assert info["weights"][0] | {"modified_time": 0, "size": 0} == {
        "name": "segmentation.pt", "source": "shipped", "version": meta["version"], "sha256": meta["sha256"],
        "modified_time": 0, "size": 0,
    }  # fmt: skip


def test_replace_validates_publishes_and_serves_the_new_weights(model_server):
    srv = model_server
    archive = _download(srv, "segmentation")
    pt, meta = archive.read("segmentation.pt"), json.loads(archive.read("segmentation.json"))
    meta["version"] = "uploaded-1"  # the same weights under a new name: proves which pair serves

    def upload(files: dict[str, bytes]) -> requests.Response:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
        return requests.put(f"{srv.url}/model/segmentation", files={"file": ("w.zip", buf.getvalue())}, timeout=120)

    bad = dict(meta, sequences=["t1n", "t1c"])
    r = upload({"segmentation.pt": pt, "segmentation.json": json.dumps(bad).encode()})
    assert r.status_code == 422 and "sidecar sequences=['t1n', 't1c'] does not match" in r.json()["detail"], r.text
    assert not (srv.studies / "model" / "segmentation.pt").exists()

    r = upload({"segmentation.pt": pt, "segmentation.json": json.dumps(meta).encode()})
    assert r.status_code == 200, r.text
    assert r.json()["published"] == [{"name": "segmentation.pt", "version": "uploaded-1", "sha256": meta["sha256"]}]
    case = list_cases(srv.studies, kind="3d")[0]
    _, params = srv.client.infer("segmentation", case, {"result_extension": ".nrrd", "result_dtype": "uint8"})
    assert params["model_version"] == "uploaded-1"

    meta["version"] = "uploaded-2"
    r = upload({"segmentation.pt": pt, "segmentation.json": json.dumps(meta).encode()})
    assert r.status_code == 200 and r.json()["previous"][0]["version"] == "uploaded-1", r.text
    kept = srv.studies / "model" / r.json()["previous"][0]["kept_as"]
    assert json.loads((kept / "segmentation.json").read_text())["version"] == "uploaded-1"
    assert not [p for p in (srv.studies / "model").iterdir() if p.name.startswith(".")]


def test_delete_is_refused_and_the_weights_stay(model_server):
    r = requests.delete(f"{model_server.url}/model/segmentation", timeout=30)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PUT", r.text
    assert "deleting the served weights is not supported" in r.json()["detail"]
    assert model_server.client.info()["models"]["segmentation"]
