"""Next-sample strategies serve only unlabelled, unreserved 3D cases, in the right order."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain_tumor_mri.activelearning.pool import Reservations
from brain_tumor_mri.server.strategies import DiverseStrategy, First, Random, UncertaintyStrategy
from tests.helpers.activelearning import StubDatastore, write_case_meta

V1, V2 = "v1", "v2"


@pytest.fixture
def store(tmp_path: Path) -> StubDatastore:
    """c1..c5 3D (c2 labelled), an id-smaller 2D image a0 that must never be served."""
    for i in ("c1", "c2", "c3", "c4", "c5"):
        write_case_meta(tmp_path, i, "3d")
    write_case_meta(tmp_path, "a0", "2d")
    return StubDatastore(tmp_path, ["c5", "c3", "a0", "c1", "c2", "c4"], labelled={"c2"})


def _scores(ds: StubDatastore, method: str, values: dict[str, tuple[float, str]]) -> None:
    for i, (score, version) in values.items():
        ds.update_image_info(i, {"scores": {method: {"score": score, "model_version": version, "ts": 0}}})


def test_first_serves_smallest_3d_unlabelled_and_skips_reserved(store):
    first = First(store.studies, Reservations())
    served = [first({}, store)["id"] for _ in range(4)]
    assert served == ["c1", "c3", "c4", "c5"]
    assert first({}, store) is None


def test_random_never_serves_labelled_or_2d_and_two_calls_differ(store):
    rnd = Random(store.studies, Reservations(), seed=3)
    a, b = rnd({}, store)["id"], rnd({}, store)["id"]
    assert a != b and {a, b} <= {"c1", "c3", "c4", "c5"}


def test_empty_pool_is_none(tmp_path):
    write_case_meta(tmp_path, "c1", "3d")
    ds = StubDatastore(tmp_path, ["c1"], labelled={"c1"})
    assert First(tmp_path, Reservations())({}, ds) is None
    assert UncertaintyStrategy(tmp_path, Reservations(), "epistemic", lambda: V1)({}, ds) is None


def test_uncertainty_serves_max_current_score_and_ignores_stale(store):
    _scores(store, "epistemic", {"c1": (0.2, V1), "c3": (0.5, V1), "c4": (0.9, V2), "c2": (5.0, V1)})
    _scores(store, "tta", {"c5": (0.99, V1)})
    strat = UncertaintyStrategy(store.studies, Reservations(), "epistemic", lambda: V1)
    served = [strat({}, store) for _ in range(4)]
    # c4's score is from an older model, c5 has only a tta score: both rank last, by id.
    assert [s["id"] for s in served] == ["c3", "c1", "c4", "c5"]
    assert served[0] == {"id": "c3", "score": 0.5, "method": "epistemic"}
    assert served[2]["score"] is None
    assert strat({}, store) is None


def test_uncertainty_ties_break_by_id_and_method_is_respected(store):
    _scores(store, "tta", {"c5": (0.3, V1), "c4": (0.3, V1), "c1": (0.1, V1)})
    strat = UncertaintyStrategy(store.studies, Reservations(), "tta", lambda: V1)
    assert [strat({}, store)["id"] for _ in range(3)] == ["c4", "c5", "c1"]


def test_shared_reservations_across_strategies(store):
    book = Reservations()
    _scores(store, "epistemic", {"c1": (0.9, V1)})
    assert UncertaintyStrategy(store.studies, book, "epistemic", lambda: V1)({}, store)["id"] == "c1"
    assert First(store.studies, book)({}, store)["id"] == "c3"


def test_no_served_model_means_no_current_scores(store):
    _scores(store, "epistemic", {"c5": (0.9, V1)})
    strat = UncertaintyStrategy(store.studies, Reservations(), "epistemic", lambda: None)
    assert strat({}, store) == {"id": "c1", "score": None, "method": "epistemic"}


def _features(ds: StubDatastore, values: dict[str, tuple[list[float], str]]) -> None:
    for i, (vector, version) in values.items():
        ds.update_image_info(i, {"features": {"vector": vector, "model_version": version, "ts": 0}})


def test_diverse_falls_back_to_uncertainty_until_every_candidate_is_described(store):
    _scores(store, "epistemic", {"c1": (0.2, V1), "c3": (0.5, V1), "c4": (0.9, V1), "c5": (0.1, V1)})
    _features(store, {"c1": ([0.0, 0.0], V1), "c3": ([0.0, 0.1], V1), "c4": ([9.0, 9.0], V2)})  # c4 stale
    answer = DiverseStrategy(store.studies, Reservations(), "epistemic", lambda: V1, clusters=2)({}, store)
    assert answer["id"] == "c4" and answer["fallback"] and answer["strategy"] == "diverse"


def test_diverse_spreads_over_clusters_skips_labelled_and_reserved(store):
    # c1, c3 near each other and most uncertain; c4, c5 another group; c2 (labelled) sits with c4/c5.
    _scores(store, "epistemic", {"c1": (0.9, V1), "c3": (0.85, V1), "c4": (0.8, V1), "c5": (0.7, V1)})
    vectors = {"c1": [0.0, 0.0], "c3": [0.1, 0.0], "c4": [5.0, 5.0], "c5": [5.1, 5.0], "c2": [5.0, 5.1]}
    _features(store, {i: (v, V1) for i, v in vectors.items()})
    book = Reservations()
    strat = DiverseStrategy(store.studies, book, "epistemic", lambda: V1, clusters=2)
    first = strat({}, store)
    assert first["id"] == "c1" and first["score"] == 0.9 and first["cluster_size"] == 2
    assert {"cluster", "distance", "deficit", "cluster_labelled"} <= set(first)
    # A second annotator: c1 is reserved, its cluster now covered; c3 (its near-duplicate,
    # next by pure uncertainty) waits and the other group's most uncertain case comes.
    second = strat({}, store)
    assert second["id"] == "c4" and second["cluster_labelled"] == 1
    served = {first["id"], second["id"], strat({}, store)["id"], strat({}, store)["id"]}
    assert served == {"c1", "c3", "c4", "c5"} and strat({}, store) is None
