"""``brain-tumor calibrate``: temperature into the sidecar, weights and hash kept, serving uses it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.cli import main as cli_main
from brain_tumor_mri.inference.classifier import build_classifier
from brain_tumor_mri.networks.checkpoint import load_model
from brain_tumor_mri.training.calibration import nll
from brain_tumor_mri.training.class_eval import collect_answers
from tests.helpers.classification import make_2d_datastore, save_tiny_weights


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    weights = tmp_path / "weights"
    save_tiny_weights(weights / "classification_2d.pt", "2d", seed=3)
    return make_2d_datastore(tmp_path / "studies", per_class=2), weights


def test_calibrate_writes_temperature_into_the_sidecar_and_serving_uses_it(setup):
    studies, weights = setup
    pt, sidecar = weights / "classification_2d.pt", weights / "classification_2d.json"
    before_pt, before_meta = _digest(pt), json.loads(sidecar.read_text())
    clf = build_classifier(weights, torch.device("cpu"), False)
    raw = collect_answers(clf, studies, "2d")
    assert cli_main(["calibrate", "classification", str(studies), "--kind", "2d", "--weights-dir", str(weights)]) == 0
    meta = json.loads(sidecar.read_text())
    cal = meta["calibration"]
    assert _digest(pt) == before_pt == meta["sha256"]  # weights untouched, hash still valid
    assert (
        meta["version"] == f"{before_meta['version']}-cal{meta['version'][-8:]}"
        and cal["base_version"] == before_meta["version"]
    )
    assert cal["fit"]["n"] == 16 and cal["fitted_on"]["n_patients"] == 8 and len(cal["fitted_on"]["groups"]) == 8
    assert len(set(cal["fitted_on"]["image_sha256"])) == 16
    assert cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-9
    feat = cal["feature_distance"]
    assert feat["n"] == 16 and feat["k"] == 4 and feat["axes"]["shape"][0] == 4 and feat["distance_max"] > 0
    load_model(pt, "classification")  # the pair still loads (sha256 check)
    served = build_classifier(weights, torch.device("cpu"), False)
    after = collect_answers(served, studies, "2d")
    t = cal["temperature"]
    for a, b in zip(raw, after):
        assert b.result.logits == a.result.logits  # same network output
        z = np.array(b.result.logits) / t
        expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert list(b.result.probabilities.values()) == pytest.approx(expected.tolist())
        assert b.result.model_version == meta["version"]
        assert b.result.confidence.policy.source == "calibrated"
        assert b.result.confidence.policy.energy_max == cal["ood"]["energy_max"]
        assert b.result.confidence.feature_distance is not None and a.result.confidence.feature_distance is None
    labels = [["glioma", "meningioma", "pituitary", "no_tumor"].index(a.true_type) for a in raw]
    logits = np.array([a.result.logits for a in raw])
    assert nll(logits, labels, t) == pytest.approx(cal["fit"]["nll_after"], abs=1e-5)
    # recalibrating replaces the block and keeps one suffix, based on the weights' own version
    assert cli_main(["calibrate", "classification", str(studies), "--kind", "2d", "--weights-dir", str(weights),
                     "--acceptance", "0.8"]) == 0  # fmt: skip
    again = json.loads(sidecar.read_text())
    assert again["calibration"]["base_version"] == before_meta["version"] and again["version"].count("-cal") == 1
    assert again["calibration"]["ood"]["acceptance"] == 0.8


def test_calibrate_out_dir_and_refusals(setup, tmp_path, caplog):
    studies, weights = setup
    out = tmp_path / "calibrated"
    argv = ["calibrate", "classification", str(studies), "--kind", "2d", "--weights-dir", str(weights)]
    assert cli_main([*argv, "--out", str(out)]) == 0
    assert "calibration" not in json.loads((weights / "classification_2d.json").read_text())
    assert _digest(out / "classification_2d.pt") == _digest(weights / "classification_2d.pt")
    assert "calibration" in load_model(out / "classification_2d.pt", "classification").meta
    assert cli_main([*argv, "--split", "val"]) == 2  # tiny weights record no training split
    assert "no validation ids" in caplog.text
    (weights / "classification_2d.pt").write_bytes(b"corrupt")
    assert cli_main(argv) == 2
    assert "sha256" in caplog.text or "cannot be loaded" in caplog.text
