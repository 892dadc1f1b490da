"""The "diverse" next-sample strategy through a real server and its client.

Epistemic scoring (run by the server's scoring subprocess) stores scores and bottleneck
features; the strategy must serve what ``diversity.select`` makes of exactly those stored
values, never a labelled case, and different cases to two annotators.
"""

from __future__ import annotations

import numpy as np
import pytest

from brain_tumor_mri.activelearning.diversity import select

from .harness import Server, copy_studies
from .test_activelearning import WEIGHTS, _objects, _run_scoring, _save_empty_label, _unlabelled_3d

pytestmark = pytest.mark.server

CLUSTERS = 2


@pytest.fixture(scope="module")
def diverse_server(imported_studies, tmp_path_factory):
    """A fresh server (no reservations) with 2 feature clusters over its own datastore copy."""
    if not WEIGHTS.is_file():
        pytest.skip(f"demo weights {WEIGHTS} not trained yet")
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("diverse") / "studies")
    srv = Server(studies, {"al_clusters": str(CLUSTERS)}, env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _expected(objects: dict, candidates: list[str], covered: set[str]) -> str:
    """What the stored scores and features say the strategy must serve."""
    info = {i: objects[i]["image"]["info"] for i in objects}
    scores = {i: info[i]["scores"]["epistemic"]["score"] for i in candidates}
    feats = {
        i: np.asarray(info[i]["features"]["vector"]) for i in candidates + sorted(covered) if "features" in info[i]
    }
    return select(scores, feats, covered, CLUSTERS).case_id


def test_diverse_serves_what_stored_scores_and_features_say_never_labelled(diverse_server, tmp_path):
    srv = diverse_server
    task = _run_scoring(srv, "epistemic")
    assert task["status"] == "DONE", srv.log_tail()
    objects = _objects(srv)
    pool = _unlabelled_3d(srv, objects)
    labelled = sorted(set(objects) - set(pool))
    assert len(pool) >= 3
    infos = {i: objects[i]["image"]["info"] for i in objects}
    versions = {infos[i]["features"]["model_version"] for i in pool} | {
        infos[i]["scores"]["epistemic"]["model_version"] for i in pool
    }
    assert len(versions) == 1, versions
    labelled_3d = [i for i in labelled if "features" in infos[i]]
    assert labelled_3d, "labelled 3D cases must be described too (they count as covered)"

    first = srv.client.next_sample("diverse", {})
    assert "fallback" not in first, first
    assert first["id"] == _expected(objects, pool, set(labelled_3d))
    assert first["score"] == pytest.approx(infos[first["id"]]["scores"]["epistemic"]["score"])
    assert first["strategy"] == "diverse" and 0 <= first["cluster"] < CLUSTERS and first["distance"] >= 0

    # A second annotator gets another case: the first one now counts as covered.
    second = srv.client.next_sample("diverse", {})
    rest = [i for i in pool if i != first["id"]]
    assert second["id"] != first["id"]
    assert second["id"] == _expected(objects, rest, set(labelled_3d) | {first["id"]})

    # Labelled cases are never served, whatever their score.
    _save_empty_label(srv, rest[0] if rest[0] != second["id"] else rest[1], tmp_path)
    served = {first["id"], second["id"]}
    while answer := srv.client.next_sample("diverse", {}):
        assert answer["id"] in pool and answer["id"] not in served, answer
        served.add(answer["id"])
    assert len(served) == len(pool) - 1
    assert set(served).isdisjoint(labelled)
