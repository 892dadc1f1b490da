"""Schema-driven fuzzing (schemathesis) of every operation of a real server: no 5xx, nothing broken.

A short, seeded run in the suite; ``brain-tumor-dev fuzz --examples 200`` is the long one
(figures in the README). No operation is excluded: the heavy ones (training, scoring)
refuse ``run_sync`` and unknown names before any work starts, which this test checks by
asserting that no training or scoring task was ever started.
"""

from __future__ import annotations

import pytest
import requests

from brain_tumor_dev.fuzz import datastore_problems, run_schemathesis, snapshot, temp_files

from .harness import Server, copy_studies, isolated_env

pytestmark = pytest.mark.server

#: examples per operation: enough to hit every parameter's bad values, a minute on 2 busy cores
EXAMPLES = 8
SEED = 20261122

#: every operation the server's schema offers (whole-slide and batch inference are hidden: 404 with a reason)
EXPECTED_OPERATIONS = {
    "POST /activelearning/{strategy}",
    "GET /datastore/", "GET /datastore/dataset",
    "DELETE /datastore/image", "GET /datastore/image", "HEAD /datastore/image", "PUT /datastore/image",
    "GET /datastore/image/info", "PUT /datastore/image/info",
    "DELETE /datastore/label", "GET /datastore/label", "HEAD /datastore/label", "PUT /datastore/label",
    "GET /datastore/label/info", "PUT /datastore/label/info",
    "GET /datastore/label/history", "GET /datastore/label/version",
    "POST /infer/{model}",
    "GET /info/",
    "GET /logs/", "GET /logs/gpu",
    "GET /model/info/{model}", "DELETE /model/{model}", "GET /model/{model}", "PUT /model/{model}",
    "DELETE /scoring/", "GET /scoring/", "POST /scoring/{method}",
    "PUT /session/", "DELETE /session/{session_id}", "GET /session/{session_id}",
    "DELETE /train/", "GET /train/", "POST /train/{model}",
}  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_server(imported_studies, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    studies = copy_studies(imported_studies, work / "studies")
    srv = Server(studies, {"models": "all"}, env=isolated_env(work))
    try:
        srv.wait_ready()
        srv.work = work  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def test_fuzzing_every_operation_finds_no_server_error(fuzz_server):
    srv = fuzz_server
    schema_ops = {
        f"{m.upper()} {p}" for p, ops in requests.get(f"{srv.url}/openapi.json", timeout=30).json()["paths"].items()
        for m in ops
    }  # fmt: skip
    assert schema_ops == EXPECTED_OPERATIONS, schema_ops ^ EXPECTED_OPERATIONS
    before, temp_before = snapshot(srv.studies), temp_files(srv.work / "tmp")

    report = run_schemathesis(srv.url, EXAMPLES, SEED, srv.work / "report", timeout=900)

    assert set(report.operations) == EXPECTED_OPERATIONS, set(report.operations) ^ EXPECTED_OPERATIONS
    assert all(report.per_operation[op] >= 3 for op in EXPECTED_OPERATIONS), report.per_operation
    assert report.server_errors == [], "\n".join(report.server_errors) + "\n" + srv.log_tail()
    assert report.status_classes.get("4xx", 0) > report.requests // 2, report.status_classes  # mostly bad input
    assert srv.alive() and srv.client.info()["models"]["segmentation"]
    for what in ("train", "scoring"):  # heavy jobs were refused, never started
        r = requests.get(f"{srv.url}/{what}/", timeout=30)
        assert r.status_code == 404, f"a {what} task was started: {r.text}"
    assert datastore_problems(srv.studies, before, set(report.touched_ids)) == []
    assert sorted(temp_files(srv.work / "tmp") - temp_before) == [], "the server left temp files"
