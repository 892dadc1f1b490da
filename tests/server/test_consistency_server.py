"""The segmentation/classification consistency rule through a real server.

The rule is tested with hand-built weights whose behaviour is known exactly
(``tests/helpers/consistency.py``): a segmentation that outlines every bright FLAIR region
and a 3D classifier that always answers ``no_tumor`` at p = 0.95. Without the rule the
server would report that confident ``no_tumor`` for every case below; with it, a case with
three separate lesions is ``other`` and a case with one 7 mL lesion is ``uncertain``, while
a case without lesions keeps its confident ``no_tumor``. (The shipped weights are not used:
what a trained model finds changes with each retraining; the rule must hold regardless.)
A second server adds the sidecar's component filter: a lesion it removes still counts for the
``no_tumor`` check but no longer confirms a named type (``consistency.no_lesion``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from brain_tumor_dev.server_process import Server
from brain_tumor_mri.networks.checkpoint import sidecar_path
from tests.helpers.consistency import (
    FLAIR,
    lesion_case,
    save_constant_classifier,
    save_threshold_segmenter,
    write_case,
)

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


def _flair_z(stack, region):
    """Median FLAIR z-score of ``region`` as the shared preprocessing normalises it (within the brain)."""
    flair = stack[FLAIR]
    brain = flair > 0
    return float(np.median((flair[region] - flair[brain].mean()) / flair[brain].std()))


@pytest.fixture(scope="module")
def filtered_server(tmp_path_factory):
    """A segmentation whose fitted filter removes a dim lesion, and a classifier that always says glioma."""
    root = tmp_path_factory.mktemp("consistency-filtered")
    studies = root / "studies"
    bright, affine, lesion = lesion_case([(20.0, 0.0, 0.0)], 12.0)
    dim = bright.copy()
    dim[:, lesion] *= 2.0 / 3.0  # a lesion twice as bright as tissue instead of three times
    z_dim, z_bright = _flair_z(dim, lesion), _flair_z(bright, lesion)
    gain = 3.0 / (z_bright - z_dim)  # WT probability: dim lesion ~ sigmoid(0.3) = 0.57, bright ~ sigmoid(3.3) = 0.96
    weights = root / "weights"
    path = save_threshold_segmenter(weights / "segmentation.pt", z_threshold=z_dim - 0.3 / gain, gain=gain)
    meta = json.loads(sidecar_path(path).read_text())
    meta["postprocess"] = {"min_mean_prob": {"whole_tumor": 0.9}}
    sidecar_path(path).write_text(json.dumps(meta))
    save_constant_classifier(weights / "classification_3d.pt", "3d", answer="glioma", logit=4.0)
    save_constant_classifier(weights / "classification_2d.pt", "2d", answer="glioma", logit=4.0)
    write_case(studies, "dim", dim, affine, "glioma")
    write_case(studies, "bright", bright, affine, "glioma")
    srv = Server(studies, {"models": "all"}, weights_dir=weights, env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_a_type_needs_a_lesion_the_user_is_shown(filtered_server):
    """The filter removes the only lesion: the segmentation shows none, so 'glioma' is not confirmed."""
    _, params = filtered_server.client.infer("segmentation", "dim", {"result_extension": ".nrrd"})
    assert params["lesions"]["count"] == 0 and params["volumes_ml"]["whole_tumor"] == 0.0
    assert [c["region"] for c in params["low_confidence_candidates"]] == ["whole_tumor"]
    cls = params["classification"]
    assert cls["best_guess"] == "glioma" and cls["probabilities"]["glioma"] > 0.9
    assert cls["tumor_type"] == "uncertain" and _codes(cls) == ["consistency.no_lesion"]
    assert cls["consistency"]["lesion_count"] == 1 and cls["consistency"]["shown_lesion_count"] == 0
    again = _classify(filtered_server, "dim")  # the same check on the classification endpoint (cached summary)
    assert again["consistency"]["source"] == "recent segmentation of this case"
    assert again["tumor_type"] == "uncertain" and _codes(again) == ["consistency.no_lesion"]


def test_a_shown_lesion_confirms_the_type(filtered_server):
    cls = _classify(filtered_server, "bright")  # no segmentation yet: the server runs one
    assert cls["consistency"]["source"] == "segmentation run for this answer"
    assert cls["tumor_type"] == "glioma" and cls["confidence"]["level"] == "high" and _codes(cls) == []
    assert cls["consistency"]["lesion_count"] == 1 and cls["consistency"]["shown_lesion_count"] == 1
