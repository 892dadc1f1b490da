"""Authentication on a real server: MONAI Label's token verification against a local realm.

The server runs with ``MONAI_LABEL_AUTH_ENABLE=true`` pointing at a local issuer that serves
a Keycloak-style realm document and signs RS256 tokens; clients log in the way Slicer does
(``POST /auth/token``, passed on to the realm) or send tokens the issuer minted.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
import requests
from monailabel.client import MONAILabelClient

from brain_tumor_dev.oidc_issuer import ROLES, new_key
from brain_tumor_mri.layout import list_cases

from .conftest import AUTH_ACCOUNTS

pytestmark = pytest.mark.server


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(realm, name: str) -> str:
    return realm.token(name, [ROLES[r] for r in AUTH_ACCOUNTS[name]])


def _detail(r: requests.Response) -> str:
    return r.json()["detail"]


def test_no_token_is_401_before_anything_runs(auth_server):
    case_id = list_cases(auth_server.studies, kind="3d")[0]
    before = sorted(p.name for p in (auth_server.studies / "labels" / "final").iterdir())
    for method, path, kw in [
        ("GET", "/info/", {}),
        ("GET", "/datastore/image", {"params": {"image": case_id}}),
        ("POST", "/infer/segmentation", {"params": {"image": case_id}}),
        ("PUT", "/datastore/label", {"params": {"image": case_id}, "files": {"label": ("l.nii.gz", b"x")}}),
        ("POST", "/train/segmentation", {"json": {}}),
    ]:
        r = requests.request(method, auth_server.url + path, timeout=30, **kw)
        assert r.status_code == 401, (path, r.text)
        assert "authentication required" in _detail(r) and "Bearer" in _detail(r)
        assert r.headers["www-authenticate"] == "Bearer"
    assert sorted(p.name for p in (auth_server.studies / "labels" / "final").iterdir()) == before


@pytest.mark.parametrize(
    "make, status, words",
    [
        (lambda realm: realm.token("alice", [ROLES["annotator"]], expires_in=-120), 401, "expired at"),
        (lambda realm: realm.token("alice", [ROLES["annotator"]], key=new_key()), 401, "signature does not match"),
        (lambda realm: "garbage", 401, "malformed token"),
        (lambda realm: realm.token("nora", []), 403, "needs the role 'monailabel-user'"),
    ],
    ids=["expired", "other-key", "garbage", "no-role"],
)
def test_bad_tokens_are_refused_with_a_clear_message(auth_server, auth_realm, make, status, words):
    r = requests.get(f"{auth_server.url}/info/", headers=_bearer(make(auth_realm)), timeout=30)
    assert r.status_code == status, r.text
    assert words in _detail(r)


def _call(srv, realm, who, method, path, **kw):
    return requests.request(method, srv.url + path, headers=_bearer(_token(realm, who)), timeout=120, **kw)


def test_each_role_gets_what_the_table_gives_it(auth_server, auth_realm):
    srv, realm = auth_server, auth_realm
    labelled = sorted(p.name.split(".")[0] for p in (srv.studies / "labels" / "final").glob("*.nii.gz"))[0]
    refused = [
        ("uma", "POST", "/activelearning/random", {"json": {}}, "monailabel-annotator"),
        ("uma", "POST", "/infer/segmentation", {"params": {"image": labelled}}, "monailabel-annotator"),
        ("alice", "POST", "/train/segmentation", {"json": {}}, "monailabel-admin"),
        ("alice", "DELETE", "/train/", {}, "monailabel-admin"),
        ("alice", "DELETE", "/datastore/label", {"params": {"id": labelled, "tag": "final"}}, "monailabel-admin"),
        ("alice", "DELETE", "/datastore/image", {"params": {"id": labelled}}, "monailabel-admin"),
        ("alice", "PUT", "/datastore/image", {"files": {"file": ("x.nii.gz", b"x")}}, "monailabel-admin"),
        (
            "alice",
            "PUT",
            "/datastore/image/info",
            {"params": {"image": labelled}, "data": {"info": "{}"}},
            "monailabel-admin",
        ),  # fmt: skip
        ("alice", "GET", "/datastore/dataset", {}, "monailabel-admin"),
        ("alice", "PUT", "/model/segmentation", {"files": {"file": ("m.pt", b"x")}}, "monailabel-admin"),
        ("alice", "POST", "/reload", {}, "monailabel-admin"),
        ("alice", "GET", "/datastore/label/history", {"params": {"image": labelled}}, "monailabel-reviewer"),
    ]
    for who, method, path, kw, role in refused:
        r = _call(srv, realm, who, method, path, **kw)
        assert r.status_code == 403, (who, method, path, r.text)
        assert f"needs the role {role!r}" in _detail(r), _detail(r)
    assert (srv.studies / "labels" / "final" / f"{labelled}.nii.gz").is_file(), "a refused delete deleted"

    assert _call(srv, realm, "uma", "GET", "/info/").json()["models"]["segmentation"]
    assert labelled in _call(srv, realm, "uma", "GET", "/datastore/", params={"output": "all"}).json()["objects"]
    assert _call(srv, realm, "uma", "GET", "/datastore/image", params={"image": labelled}).content[:2] == b"\x1f\x8b"
    # the reviewer passes the gate (no versions saved yet for this case: 404, not 401/403)
    r = _call(srv, realm, "rita", "GET", "/datastore/label/history", params={"image": labelled})
    assert r.status_code == 404 and "no saved versions" in _detail(r)
    # a token with only the admin role reads too (roles nest), and may stop training and export
    assert _call(srv, realm, "adam", "GET", "/info/").status_code == 200
    assert _call(srv, realm, "adam", "DELETE", "/train/").status_code == 200
    export = _call(srv, realm, "adam", "GET", "/datastore/dataset", params={"limit_cases": 2})
    assert export.status_code == 200 and export.content[:2] == b"PK"


def _plain_get(srv, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """A GET with no Authorization header, as Slicer's SampleData download makes it."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_slicer_login_next_sample_download_infer_save(auth_server, tmp_path):
    """The whole Slicer session with auth on, including the image download that #1493 broke."""
    srv = auth_server
    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path), client_id="user-xyz")
    assert client.auth_enabled()
    client.update_auth(client.auth_token("alice", "pw-alice"))  # Slicer's login dialog: MONAI Label -> realm
    assert client.auth_valid_token()
    assert client.info()["models"]["segmentation"]["type"] == "segmentation"

    sample = client.next_sample("random", {})
    image_id = sample["id"]
    download = f"/datastore/image?image={image_id}"
    status, _ = _plain_get(srv, download, source="127.0.0.2")  # another machine: no
    assert status == 401
    status, body = _plain_get(srv, download)  # Slicer, right after Next Sample: yes, once
    assert status == 200 and body == (srv.studies / f"{image_id}.nii.gz").read_bytes()
    status, body = _plain_get(srv, download)
    assert status == 401 and b"authentication required" in body
    status, _ = _plain_get(srv, f"/datastore/image?image={list_cases(srv.studies, kind='3d')[-1]}")
    assert status == 401

    label_path, params = client.infer("segmentation", image_id, {"result_extension": ".nii.gz"})
    assert params["model_version"] and Path(label_path).stat().st_size > 0
    saved = client.save_label(image_id, label_path, tag="final", params={"label_info": []})
    assert saved["image"] == image_id
    info = client.datastore()["objects"][image_id]["labels"]["final"]["info"]["provenance"]
    assert (info["saved_by"], info["verified"], info["model_version"]) == ("alice", True, params["model_version"])

    log = Path(srv.log_path).read_text(errors="replace").splitlines()
    audit = [line for line in log if "brain_tumor_mri.audit" in line]
    assert any(f"user=alice ip=127.0.0.1 PUT /datastore/label?image={image_id}" in line for line in audit)
    assert any("via the Next Sample download grant" in line and image_id in line for line in audit)
    assert not any("pw-alice" in line for line in log), "a password reached the log"


def test_wrong_password_is_refused(auth_server):
    r = requests.post(f"{auth_server.url}/auth/token", data={"username": "alice", "password": "x"}, timeout=30)
    assert r.status_code == 401, r.text


def test_the_server_says_whether_it_is_open(server, auth_server):
    open_log = Path(server.log_path).read_text(errors="replace")
    assert "AUTHENTICATION IS OFF" in open_log and "Listen only on localhost" in open_log
    closed_log = Path(auth_server.log_path).read_text(errors="replace")
    assert "authentication ON: tokens verified against realm" in closed_log
    assert "AUTHENTICATION IS OFF" not in closed_log
