"""The segmentation/classification consistency rule through a real server.

The rule is tested with hand-built weights whose behaviour is known exactly
(``tests/helpers/consistency.py``): a segmentation that outlines every bright FLAIR region
and a 3D classifier that always answers ``no_tumor`` at p = 0.95. Without the rule the
server would report that confident ``no_tumor`` for every case below; with it, a case with
three separate lesions is ``other`` and a case with one 7 mL lesion is ``uncertain``, while
a case without lesions keeps its confident ``no_tumor``. (The shipped weights are not used:
what a trained model finds changes with each retraining; the rule must hold regardless.)
"""

from __future__ import annotations

import json

import pytest
import requests

from brain_tumor_dev.server_process import Server
from tests.helpers.consistency import lesion_case, save_constant_classifier, save_threshold_segmenter, write_case

pytestmark = pytest.mark.server

THREE_LESIONS = [(-40.0, 20.0, 10.0), (40.0, -30.0, 0.0), (0.0, 50.0, -20.0)]


@pytest.fixture(scope="module")
def rule_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    weights = root / "weights"
    save_threshold_segmenter(weights / "segmentation.pt")
    save_constant_classifier(weights / "classification_3d.pt", "3d", answer="no_tumor", logit=4.0)
    save_constant_classifier(weights / "classification_2d.pt", "2d", answer="no_tumor", logit=4.0)
    studies = root / "studies"
    for case_id, centres, radius in (
        ("mets", THREE_LESIONS, 10.0),
        ("big", [(20.0, 0.0, 0.0)], 12.0),
        ("clean", [], 10.0),
    ):
        stack, affine, _ = lesion_case(centres, radius)
        write_case(studies, case_id, stack, affine, "metastasis" if case_id == "mets" else "glioma")
    srv = Server(studies, {"models": "all"}, weights_dir=weights, env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _classify(srv: Server, case_id: str) -> dict:
    r = requests.post(f"{srv.url}/infer/classification", params={"image": case_id}, data={"params": "{}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _codes(answer: dict) -> list[str]:
    return [r["code"] for r in answer["confidence"]["reasons"]]


def test_several_lesions_are_other_in_both_answers(rule_server):
    _, params = rule_server.client.infer("segmentation", "mets", {"result_extension": ".nrrd"})
    lesions = params["lesions"]
    assert lesions["count"] == 3 and len(lesions["lesions"]) == 3
    assert all(les["volume_ml"] == pytest.approx(3.84, abs=0.5) for les in lesions["lesions"])
    cls = params["classification"]
    assert cls["best_guess"] == "no_tumor" and cls["probabilities"]["no_tumor"] > 0.9
    assert cls["tumor_type"] == "other"
    assert _codes(cls) == ["consistency.multiple_lesions", "consistency.tumour_found"]
    assert "metastasis-like" in cls["confidence"]["reasons"][0]["message"]
    assert cls["consistency"]["lesion_count"] == 3 and cls["consistency"]["source"] == "this segmentation"
    again = _classify(rule_server, "mets")  # reuses the segmentation just made of this case
    assert again["tumor_type"] == "other" and _codes(again) == _codes(cls)
    assert again["consistency"]["source"] == "recent segmentation of this case"
    stored = rule_server.client.datastore()["objects"]["mets"]["image"]["info"]["classification"]
    assert stored["tumor_type"] == "other"


def test_large_tumour_never_gets_a_confident_no_tumor(rule_server):
    cls = _classify(rule_server, "big")  # no segmentation of this case yet: the server runs one
    assert cls["consistency"]["source"] == "segmentation run for this answer"
    assert cls["consistency"]["whole_tumor_ml"] > 5.0 and cls["consistency"]["lesion_count"] == 1
    assert cls["best_guess"] == "no_tumor" and cls["tumor_type"] == "uncertain"
    assert _codes(cls) == ["consistency.tumour_found"] and cls["confidence"]["level"] == "low"
    json.dumps(cls)


def test_case_without_lesions_keeps_its_confident_answer(rule_server):
    cls = _classify(rule_server, "clean")
    assert cls["tumor_type"] == "no_tumor" and cls["confidence"]["level"] == "high" and _codes(cls) == []
    assert (
        cls["consistency"]["applied"] and cls["consistency"]["consistent"] and cls["consistency"]["lesion_count"] == 0
    )
