"""Classification metrics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from brain_tumor_mri.training.class_metrics import (
    classification_metrics,
    clustered_accuracy_interval,
    confusion_matrix,
    ece_if_calibrated,
    expected_calibration_error,
    roc_auc,
)

CLASSES = ("glioma", "meningioma", "pituitary", "no_tumor")
Y = [0, 0, 1, 1, 2, 3]
P = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.3, 0.5, 0.1, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.2, 0.7, 0.05, 0.05],
        [0.1, 0.1, 0.7, 0.1],
        [0.5, 0.2, 0.1, 0.2],
    ]
)  # fmt: skip  (predicted: 0, 1, 1, 1, 2, 0)


def test_confusion_matrix_rows_are_true_classes() -> None:
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert confusion_matrix(Y, [0, 1, 1, 1, 2, 0], 4).tolist() == expected


def test_known_values() -> None:
    m = classification_metrics(Y, P, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    pc = m["per_class"]
    assert pc["glioma"]["precision"] == pytest.approx(0.5) and pc["glioma"]["recall"] == pytest.approx(0.5)
    assert pc["meningioma"]["precision"] == pytest.approx(2 / 3) and pc["meningioma"]["f1"] == pytest.approx(0.8)
    assert pc["pituitary"]["f1"] == pytest.approx(1.0)
    assert pc["no_tumor"]["precision"] is None  # never predicted
    assert pc["no_tumor"]["recall"] == 0.0 and pc["no_tumor"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 1.0 + 0.0) / 4)
    assert pc["glioma"]["roc_auc"] == pytest.approx(7 / 8)
    assert [pc[c]["roc_auc"] for c in CLASSES[1:]] == [1.0, 1.0, 1.0]
    assert m["macro_roc_auc"] == pytest.approx((7 / 8 + 3) / 4)
    assert [pc[c]["support"] for c in CLASSES] == [2, 2, 1, 1]


def test_roc_auc_ties_and_undefined() -> None:
    assert roc_auc([True, False], [0.5, 0.5]) == 0.5
    assert roc_auc([True, False, False], [0.2, 0.9, 0.1]) == 0.5
    assert roc_auc([True, True], [0.1, 0.2]) is None


def test_absent_class_has_undefined_auc_and_recall() -> None:
    m = classification_metrics([0, 1], np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0]]), CLASSES)
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["per_class"]["pituitary"]["roc_auc"] is None and m["per_class"]["pituitary"]["recall"] is None


def _dirichlet_probs(n: int, seed: int, sharpness: float) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(len(CLASSES), sharpness), size=n)


def test_ece_if_calibrated_accepts_calibrated_answers_and_flags_overconfident_ones() -> None:
    """Labels drawn from the model's own probabilities are calibrated by construction; flipping half
    of the confident answers' labels makes the same probabilities over-confident."""
    probs = _dirichlet_probs(100, 1, 0.3)
    rng = np.random.default_rng(2)
    calibrated = np.array([rng.choice(len(CLASSES), p=p) for p in probs])
    ref = ece_if_calibrated(probs, calibrated)
    observed = expected_calibration_error(probs, calibrated)
    assert ref["draws"] == 1000 and 0.0 < ref["median"] < ref["p95"] < 0.3
    assert observed > 0.02 and ref["p_value"] > 0.05  # binning noise alone reads this much on 100 cases
    wrong = probs.argmax(axis=1)
    wrong[::2] = (wrong[::2] + 1) % len(CLASSES)  # top answer right on only half the cases
    over = ece_if_calibrated(probs, wrong)
    assert expected_calibration_error(probs, wrong) > over["p95"] and over["p_value"] < 0.01
    assert over["median"] == ref["median"]  # the reference depends on the probabilities only
    assert ece_if_calibrated(probs[:0], calibrated[:0]) == {"median": None, "p95": None, "p_value": None, "draws": 0}


def test_ece_reference_shrinks_with_more_answers() -> None:
    """Binning noise falls with the number of answers: 2,000 read well under half of 50."""
    small, large = _dirichlet_probs(50, 3, 0.3), _dirichlet_probs(2000, 3, 0.3)
    at_50 = ece_if_calibrated(small, small.argmax(axis=1), draws=200)["median"]
    assert ece_if_calibrated(large, large.argmax(axis=1), draws=200)["median"] < at_50 / 2


def test_accuracy_interval_resamples_whole_patients() -> None:
    """Errors that come per patient widen the interval; the same share wrong in every patient gives a point."""
    groups = [f"p{i // 5}" for i in range(100)]  # 20 patients, 5 pictures each
    spread = [i % 5 != 0 for i in range(100)]  # 80 % right: one wrong picture in every patient
    clustered = [i < 80 for i in range(100)]  # 80 % right: 4 patients entirely wrong
    lo_s, hi_s = clustered_accuracy_interval(spread, groups)
    lo_c, hi_c = clustered_accuracy_interval(clustered, groups)
    assert lo_s == pytest.approx(0.8) and hi_s == pytest.approx(0.8)
    assert lo_c < 0.7 and hi_c > 0.9  # about +-0.18 with 4 of 20 patients wrong
    assert clustered_accuracy_interval([], []) is None
