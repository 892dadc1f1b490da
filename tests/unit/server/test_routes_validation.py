"""The API edge checks, the MONAI Label exception mapping and the route-table surgery, in process."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

from brain_tumor_mri.server import handlers
from brain_tumor_mri.server import route_table as routes
from brain_tumor_mri.server import validation as v


@pytest.mark.parametrize(
    "text, words",
    [
        ("not json", ["params: not valid JSON"]),
        ("[1, 2]", ["expected a JSON object, got an array"]),
        ('"x"', ["got a string"]),
        ("3", ["got a number"]),
        ("null", ["got null"]),
        ("[" * 100_000, ["not valid JSON"]),
    ],
)
def test_json_object_names_the_field_and_the_problem(text, words):
    with pytest.raises(HTTPException) as err:
        v.json_object("params", text)
    assert err.value.status_code == 422
    assert all(w in err.value.detail for w in words), err.value.detail


def test_json_object_accepts_objects_and_empty():
    assert v.json_object("params", '{"a": 1}') == {"a": 1}
    assert v.json_object("params", "") == {} and v.json_object("params", None) == {}


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"result_extension": ".exe"}, 422, ["result_extension '.exe' not supported", ".seg.nrrd"]),
        ({"result_dtype": "complex128"}, 422, ["result_dtype 'complex128' not supported", "uint8"]),
        ({"model": "x", "image": "/etc/passwd"}, 422, ["['image', 'model'] cannot be set in params"]),
    ],
)
def test_infer_params_refused(params, status, words):
    with pytest.raises(HTTPException) as err:
        v.infer_params(params)
    assert err.value.status_code == status and all(w in err.value.detail for w in words), err.value.detail


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd"])
def test_infer_params_accept_what_slicer_and_the_seg_writer_send(ext):
    v.infer_params({"result_extension": ext, "result_dtype": "uint8", "client_id": "slicer", "sequences": []})


def test_known_name_lists_what_the_server_has():
    with pytest.raises(HTTPException) as err:
        v.known_name("strategy", "nosuch", ("random", "first"))
    assert err.value.status_code == 404
    assert err.value.detail == "unknown strategy 'nosuch'; this server has: first, random"
    assert v.known_name("strategy", "first", ("random", "first")) == "first"


@pytest.mark.parametrize("value", ["", "../x", "a/b", "x" * 200, " "])
def test_case_id_refuses_paths_and_oversize(value):
    with pytest.raises(HTTPException) as err:
        v.case_id("image id", value)
    assert err.value.status_code == 422 and "image id" in err.value.detail


@pytest.mark.parametrize(
    "name, ok", [("a.nii.gz", True), ("A.NRRD", True), ("p.png", True), ("x.exe", False), ("", False)]
)
def test_upload_extension(name, ok):
    if ok:
        assert v.upload_extension("file", name)
    else:
        with pytest.raises(HTTPException, match="file type not accepted"):
            v.upload_extension("file", name)


def test_run_sync_is_refused_with_the_status_route():
    v.no_run_sync(False, "training", "/train/")
    with pytest.raises(HTTPException) as err:
        v.no_run_sync(True, "training", "/train/")
    assert err.value.status_code == 422 and "poll GET /train/" in err.value.detail


@pytest.mark.parametrize(
    "exc, status",
    [
        (ImageNotFoundException("Image x not found"), 404),
        (LabelNotFoundException("Label: x Tag: final not found"), 404),
        (MONAILabelException(MONAILabelError.INVALID_INPUT, "no model 'x'"), 422),
        (MONAILabelException(MONAILabelError.APP_ERROR, "disk full"), None),
        (MONAILabelException(MONAILabelError.SERVER_ERROR, "bug"), None),
    ],
)
def test_only_client_errors_of_monailabel_map_to_4xx(exc, status):
    assert handlers.status_for(exc) == status


def test_public_message_drops_paths_and_request_dumps():
    msg = "There is no model '0' available; {'model': '0', 'bundle_path': '/srv/app/x'}"
    assert handlers.public_message(msg) == "There is no model '0' available"
    assert handlers.public_message("cannot open /srv/studies/labels/a.nii.gz now") == "cannot open a.nii.gz now"


def _app_raising(exc: Exception) -> TestClient:
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise exc

    app.middleware_stack = app.build_middleware_stack()  # as if it had started before the app installs
    handlers.install_exception_handlers(app)
    return TestClient(app, raise_server_exceptions=False)


def test_installed_handler_maps_unknown_ids_to_404_after_start():
    r = _app_raising(ImageNotFoundException("Image /srv/studies/x.nii.gz not found")).get("/boom")
    assert r.status_code == 404 and r.json() == {"detail": "Image x.nii.gz not found"}


def test_installed_handler_keeps_genuine_faults_500():
    assert _app_raising(MONAILabelException(MONAILabelError.APP_ERROR, "x")).get("/boom").status_code == 500
    assert _app_raising(KeyError("x")).get("/boom").status_code == 500


def test_replace_route_keeps_other_methods_and_docs(monkeypatch):
    app = FastAPI()

    @app.api_route("/thing", methods=["GET", "HEAD"], summary="the thing")
    def thing() -> dict:
        return {"old": True}

    monkeypatch.setattr(routes, "_full", lambda path: path)
    routes.replace_route(app, routes.Route("GET", "/thing", lambda: {"new": True}, "test"))
    client = TestClient(app)
    assert client.get("/thing").json() == {"new": True}
    assert client.head("/thing").status_code == 200  # still served by the original route
    assert app.openapi()["paths"]["/thing"]["get"]["summary"] == "the thing"
    with pytest.raises(RuntimeError, match="not found"):
        routes.replace_route(app, routes.Route("PUT", "/thing", lambda: None, "test"))


def test_unsupported_endpoint_answers_404_with_its_reason(monkeypatch):
    app = FastAPI()

    @app.post("/wsi/{model}")
    def wsi(model: str) -> dict:
        return {}

    monkeypatch.setattr(routes, "_full", lambda path: path)
    routes.replace_route(
        app, routes.Route("POST", "/wsi/{model}", routes.unsupported_endpoint("no WSI"), "", hidden=True)
    )
    r = TestClient(app).post("/wsi/x")
    assert r.status_code == 404 and r.json()["detail"] == "no WSI"
    assert "/wsi/{model}" not in app.openapi()["paths"]
