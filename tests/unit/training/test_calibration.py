"""Temperature scaling, OOD thresholds and the expected calibration error on hand-made data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from brain_tumor_mri.networks.checkpoint import strip_version_suffix
from brain_tumor_mri.training.calibration import (
    T_BOUNDS,
    calibration_digest,
    calibration_record,
    fit_ood_thresholds,
    fit_temperature,
    nll,
)
from brain_tumor_mri.training.class_metrics import expected_calibration_error, reliability_bins


def _sampled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (n, 4))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    return z, y


def test_fitted_temperature_lowers_nll_of_an_overconfident_model():
    z, y = _sampled(1500, seed=1)
    over = 4.0 * z  # same ranking, four times too sure
    t = fit_temperature(over, y)
    assert 3.3 < t < 4.8
    assert nll(over, y, t) < nll(over, y, 1.0) - 0.3
    probs_before = np.exp(over - over.max(1, keepdims=True))
    probs_before /= probs_before.sum(1, keepdims=True)
    probs_after = np.exp(over / t - (over / t).max(1, keepdims=True))
    probs_after /= probs_after.sum(1, keepdims=True)
    assert expected_calibration_error(probs_after, y) < 0.05 < expected_calibration_error(probs_before, y)


def test_calibrated_model_keeps_temperature_near_one():
    z, y = _sampled(3000, seed=2)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.12)


def test_underconfident_model_gets_temperature_below_one():
    z, y = _sampled(1500, seed=3)
    t = fit_temperature(0.4 * z, y)
    assert 0.3 < t < 0.5


def test_fit_is_deterministic_and_bounded(caplog):
    z, y = _sampled(300, seed=4)
    assert fit_temperature(z, y) == fit_temperature(z.copy(), y.copy())
    # every case right with a huge margin: the NLL keeps falling as T -> 0; the fit stops at the bound
    sure = np.eye(4)[y] * 50.0
    with caplog.at_level(logging.WARNING):
        t = fit_temperature(sure, y)
    assert t == pytest.approx(T_BOUNDS[0], rel=0.02)
    assert "bound" in caplog.text


def test_single_class_or_no_cases_keep_temperature_one(caplog):
    z, _ = _sampled(50, seed=5)
    with caplog.at_level(logging.WARNING):
        assert fit_temperature(z, np.zeros(50, dtype=int)) == 1.0
        assert fit_temperature(np.zeros((0, 4)), np.zeros(0, dtype=int)) == 1.0
    assert "single class" in caplog.text and "no validation cases" in caplog.text


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros((3, 4)), [0, 1], "N = len"),
        (np.full((2, 4), np.nan), [0, 1], "NaN"),
        (np.zeros((2, 4)), [0, 4], "0..3"),
    ],
)
def test_bad_inputs_are_refused(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels)


def test_ece_and_reliability_on_a_hand_made_example():
    probs = np.array([[0.9, 0.1, 0, 0], [0.9, 0.05, 0.05, 0], [0.6, 0.4, 0, 0], [0.3, 0.3, 0.2, 0.2]])
    labels = [0, 1, 0, 3]  # right at 0.9, wrong at 0.9, right at 0.6, wrong at 0.3
    # bins of width 1/15: {0.9, 0.9} acc 0.5 -> 2/4 * 0.4; {0.6} acc 1 -> 1/4 * 0.4; {0.3} acc 0 -> 1/4 * 0.3
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2 + 0.1 + 0.075)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    full = [b for b in bins if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in full] == [(1, 0.0), (1, 1.0), (2, 0.5)]
    assert full[2]["lo"] == pytest.approx(13 / 15) and full[2]["confidence"] == pytest.approx(0.9)
    assert expected_calibration_error(np.array([[1.0, 0, 0, 0]]), [0]) == 0.0
    assert np.isnan(expected_calibration_error(np.zeros((0, 4)), []))


def test_energy_threshold_accepts_the_chosen_share_of_validation_cases():
    z, _ = _sampled(400, seed=6)
    th = fit_ood_thresholds(z, 1.5, acceptance=0.9)
    energies = -1.5 * np.log(np.exp(z / 1.5).sum(axis=1))
    assert np.mean(energies <= th["energy_max"]) == pytest.approx(0.9, abs=0.01)
    assert th["max_probability_min"] == 0.5
    with pytest.raises(ValueError, match="acceptance"):
        fit_ood_thresholds(z, 1.0, acceptance=1.0)


def test_calibration_record_and_version_suffix():
    z, y = _sampled(600, seed=7)
    record = calibration_record(3.0 * z, y, fitted_on={"n": 600})
    assert record["fit"]["nll_after"] < record["fit"]["nll_before"]
    assert record["fit"]["ece_after"] < record["fit"]["ece_before"]
    assert record["temperature"] > 2.0 and record["fitted_on"] == {"n": 600}
    digest = calibration_digest(
        record
    )  # the sidecar writer appends "-cal<digest>" (test_classification, test_calibrate)
    assert len(digest) == 8 and all(ch in "0123456789abcdef" for ch in digest)
    version = f"20261121-202607-e584a97c-cal{digest}"
    assert strip_version_suffix(version, "cal") == "20261121-202607-e584a97c"
    assert strip_version_suffix("20261121-202607-e584a97c", "cal") == "20261121-202607-e584a97c"
    other = {**record, "temperature": record["temperature"] + 0.1}
    assert calibration_digest(other) != digest


def _clusters(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Features of four classes: Gaussian clusters in 40 dimensions (optionally all shifted)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 3, (4, 40))
    y = rng.integers(0, 4, n)
    return centres[y] + rng.normal(0, 1, (n, 40)) + shift, y


def test_feature_distance_accepts_familiar_and_flags_shifted_features():
    from brain_tumor_mri.inference.feature_ood import FeatureModel
    from brain_tumor_mri.training.calibration import fit_feature_distance

    x, y = _clusters(400, seed=1)
    block = fit_feature_distance(x, y, acceptance=0.95)
    assert block is not None and block["k"] == 32 and block["n"] == 400 and block["axes"]["shape"] == [32, 40]
    model = FeatureModel.from_meta(block)
    assert model is not None
    fitted = np.array([model.distance(f) for f in x])
    assert np.mean(fitted <= model.distance_max) == pytest.approx(0.95, abs=0.01)
    fresh, _ = _clusters(300, seed=2)
    shifted, _ = _clusters(300, seed=3, shift=2.0)
    assert np.mean([model.distance(f) > model.distance_max for f in fresh]) < 0.15
    assert np.mean([model.distance(f) > model.distance_max for f in shifted]) > 0.95
    assert fit_feature_distance(x[:5], y[:5]) is None  # too few cases to fit
    json.dumps(block)  # lives in the JSON sidecar


def test_feature_model_refuses_malformed_blocks_and_wrong_lengths():
    from brain_tumor_mri.inference.feature_ood import FeatureModel
    from brain_tumor_mri.training.calibration import fit_feature_distance

    x, y = _clusters(64, seed=4)
    block = fit_feature_distance(x, y)
    assert block is not None and block["k"] == 16  # N // 4
    assert FeatureModel.from_meta({**block, "axes": {"shape": [1, 2], "float32_base64": "AACAPwAAAEA="}}) is None
    assert FeatureModel.from_meta({**block, "axes": {"shape": [2], "float32_base64": "not base64!"}}) is None
    assert FeatureModel.from_meta({"mean": [0.0]}) is None and FeatureModel.from_meta(None) is None
    with pytest.raises(ValueError, match="length"):
        FeatureModel.from_meta(block).distance(np.zeros(7))
