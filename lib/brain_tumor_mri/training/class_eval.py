"""Held-out evaluation of the served classifiers on a labelled datastore, plus timing.

Runs exactly the inference path (``Classifier.classify_image`` / ``classify_case``) on
every labelled case of a datastore that training never saw, and reports discrimination
(per-class recall/precision/F1, confusion matrix, macro ROC AUC, a 95 % interval of accuracy
resampling whole patients), calibration (NLL and
15-bin top-label ECE with the reliability table, before = temperature 1 and after = the
sidecar's temperature, with the ECE a perfectly calibrated model would read on this many
answers: ``class_metrics.ece_if_calibrated``), the low-confidence signal (rate, accuracy on
the confident and the low-confidence answers, reasons), what the model answers on cases of a
type outside its classes (e.g. metastases), optional per-group figures (``group_by`` a
metadata column), and split honesty (image and patient counts; images identical to ones the temperature was fitted
on, found by content hash, since case ids of different datasets can coincide). Timing: model
time (forward + softmax on a preprocessed input) and end-to-end time (read + preprocess +
model) as medians over repeated runs after warm-up.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..hashing import file_sha256
from ..imageio import InputError, load_sequences
from ..inference.classifier import Classifier, ClassResult
from ..inference.confidence import HIGH, calibrated_probabilities
from ..inference.consistency import CaseLesions
from ..labels import TUMOR_CLASSES
from ..layout import image_path, list_cases, read_case_meta, resolve_case
from ..transforms.classify_preprocess import ClassPreprocess
from .case_meta import group_value, lookup
from .class_data import group_of, load_image
from .class_metrics import (
    classification_metrics,
    clustered_accuracy_interval,
    ece_if_calibrated,
    expected_calibration_error,
    reliability_bins,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One evaluated case: its true type (possibly outside the classes), split group, metadata, answer."""

    case_id: str
    true_type: str
    group: str
    meta: dict[str, Any]
    result: ClassResult
    image_sha: str = ""  # content hash of the datastore image (first 16 hex digits of its sha256)


def image_digest(path: Path) -> str:
    """First 16 hex digits of the sha256 of a file: identifies an image whatever its case id."""
    return file_sha256(path)[:16]


def classify_datastore_case(
    classifier: Classifier, studies: Path, case_id: str, kind: str, lesions: CaseLesions | None = None
) -> ClassResult:
    """Classify one datastore case through the public inference entry points.

    With ``lesions`` (3D), the answer is checked against a segmentation of the case as the
    server does (``inference/consistency.py``).
    """
    path = image_path(studies, case_id)
    if path is None:
        raise InputError(f"{case_id}: no image in the datastore")
    if kind == "2d":
        return classifier.classify_image(path)
    files = resolve_case(path).sequences
    stack, affine, _ = load_sequences(files, allow_missing=False)
    result = classifier.classify_case(stack, affine)
    if lesions is None:
        return result
    summary, source = lesions.for_case(files, stack, affine)
    return lesions.answer(result, summary, source)


def collect_answers(
    classifier: Classifier, studies: Path, kind: str, table: dict[str, dict[str, Any]] | None = None,
    lesions: CaseLesions | None = None,
) -> list[Answer]:  # fmt: skip
    """Answers for every case of ``kind`` with a tumour type (in the classes or not)."""
    answers = []
    for case_id in list_cases(studies, kind=kind):
        own = read_case_meta(studies, case_id)
        true_type = own.get("tumor_type")
        if not true_type:
            continue
        try:
            res = classify_datastore_case(classifier, studies, case_id, kind, lesions)
        except InputError as exc:
            logger.warning("skipping %s: %s", case_id, exc)
            continue
        meta = {**own, **lookup(case_id, table or {}, own)}
        path = image_path(studies, case_id)
        digest = image_digest(path) if path is not None else ""
        answers.append(Answer(case_id, str(true_type), group_of(case_id, own), meta, res, digest))
    return answers


def _calibration(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """NLL, ECE and reliability table at temperature 1 (before) and at ``temperature`` (after)."""
    from .calibration import nll

    out: dict[str, Any] = {"temperature": temperature}
    for name, t in (("before", 1.0), ("after", temperature)):
        probs = calibrated_probabilities(logits, t)
        out[name] = {"nll": nll(logits, labels, t), "ece": expected_calibration_error(probs, labels),
                     "reliability": reliability_bins(probs, labels)}  # fmt: skip
    out["after"]["ece_if_calibrated"] = ece_if_calibrated(calibrated_probabilities(logits, temperature), labels)
    return out


def _confidence(answers: list[Answer]) -> dict[str, Any]:
    """Low-confidence rate and accuracy on the confident and the low-confidence answers."""
    correct = np.array([a.result.best_guess == a.true_type for a in answers])
    high = np.array([a.result.confidence.level == HIGH for a in answers])
    reasons = Counter(r.code for a in answers for r in a.result.confidence.reasons)
    return {
        "n": len(answers),
        "low_rate": float(1.0 - high.mean()) if len(answers) else None,
        "n_low": int((~high).sum()),
        "accuracy_confident": float(correct[high].mean()) if high.any() else None,
        "accuracy_low": float(correct[~high].mean()) if (~high).any() else None,
        "answers": dict(Counter(a.result.tumor_type for a in answers)),
        "reasons": dict(sorted(reasons.items())),
    }


def per_patient(answers: list[Answer]) -> dict[str, Any]:
    """Figures per patient: the mean calibrated probabilities of a patient's pictures, one vote each.

    Pictures of one patient are not independent; this view counts each patient once.
    """
    by: dict[str, list[Answer]] = {}
    for a in answers:
        by.setdefault(a.group, []).append(a)
    labels, probs = [], []
    for members in by.values():
        labels.append(TUMOR_CLASSES.index(Counter(a.true_type for a in members).most_common(1)[0][0]))
        probs.append(np.mean([[a.result.probabilities[c] for c in TUMOR_CLASSES] for a in members], axis=0))
    m = classification_metrics(labels, np.array(probs), TUMOR_CLASSES)
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_roc_auc")}


def summarise(answers: list[Answer], fitted_images: list[str] | None = None) -> dict[str, Any]:
    """All figures for in-class answers, plus the answers given on out-of-class cases."""
    inside = [a for a in answers if a.true_type in TUMOR_CLASSES]
    outside = [a for a in answers if a.true_type not in TUMOR_CLASSES]
    if not inside:
        raise ValueError("no labelled cases of the model's classes to evaluate")
    labels = np.array([TUMOR_CLASSES.index(a.true_type) for a in inside])
    probs = np.array([[a.result.probabilities[c] for c in TUMOR_CLASSES] for a in inside])
    logits = np.array([a.result.logits for a in inside])
    metrics = classification_metrics(labels.tolist(), probs, TUMOR_CLASSES)
    correct = [a.result.best_guess == a.true_type for a in inside]
    metrics["accuracy_ci95"] = clustered_accuracy_interval(correct, [a.group for a in inside])
    metrics["model_version"] = inside[-1].result.model_version
    metrics["calibration"] = _calibration(logits, labels, inside[-1].result.confidence.policy.temperature)
    metrics["confidence"] = _confidence(inside)
    metrics["thresholds"] = inside[-1].result.confidence.policy.as_params()
    groups = sorted({a.group for a in inside})
    shared = {a.image_sha for a in inside} & set(fitted_images or [])
    metrics["split"] = {"n_images": len(inside), "n_patients": len(groups),
                        "overlap_with_calibration_set": len(shared)}  # fmt: skip
    if len(groups) < len(inside):
        metrics["per_patient"] = per_patient(inside)
    if outside:
        metrics["out_of_class"] = {t: _confidence([a for a in outside if a.true_type == t])
                                   for t in sorted({a.true_type for a in outside})}  # fmt: skip
    return metrics


def by_group(answers: list[Answer], column: str) -> dict[str, Any]:
    """Headline figures per value of metadata ``column`` (in-class answers only)."""
    out: dict[str, Any] = {}
    inside = [a for a in answers if a.true_type in TUMOR_CLASSES]
    for value in sorted({group_value(a.meta, column) for a in inside}):
        part = [a for a in inside if group_value(a.meta, column) == value]
        labels = [TUMOR_CLASSES.index(a.true_type) for a in part]
        probs = np.array([[a.result.probabilities[c] for c in TUMOR_CLASSES] for a in part])
        m = classification_metrics(labels, probs, TUMOR_CLASSES)
        conf = _confidence(part)
        out[value] = {"n": m["n"], "n_patients": len({a.group for a in part}), "accuracy": m["accuracy"],
                      "balanced_accuracy": m["balanced_accuracy"], "ece": expected_calibration_error(probs, labels),
                      "low_rate": conf["low_rate"], "accuracy_confident": conf["accuracy_confident"]}  # fmt: skip
    return out


def answer_rows(answers: list[Answer], column: str | None = None) -> list[dict[str, Any]]:
    """Per-case prediction rows for the CSV."""
    rows = []
    for a in answers:
        r = a.result
        distance = r.confidence.feature_distance
        row = {"case_id": a.case_id, "group": a.group, "true": a.true_type, "answer": r.tumor_type,
               "best_guess": r.best_guess, "confidence": r.confidence.level,
               "reasons": ";".join(x.code for x in r.confidence.reasons),
               **{f"p_{c}": round(r.probabilities[c], 6) for c in TUMOR_CLASSES},
               "energy": round(r.confidence.energy, 4),
               "feature_distance": "" if distance is None else round(distance, 3),
               "max_probability": round(r.confidence.max_probability, 6)}  # fmt: skip
        if column:
            row[column] = group_value(a.meta, column)
        rows.append(row)
    return rows


def evaluate_datastore(
    classifier: Classifier, studies: Path, kind: str, table: dict[str, dict[str, Any]] | None = None,
    group_column: str | None = None, lesions: CaseLesions | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Metrics and per-case rows for every case of ``kind`` with a tumour type in ``studies``."""
    answers = collect_answers(classifier, studies, kind, table, lesions)
    if not answers:
        raise ValueError(f"no labelled {kind} cases to evaluate in {studies}")
    model = classifier.stores[kind].get()
    fitted = (model.meta.get("calibration") or {}).get("fitted_on", {}).get("image_sha256")
    metrics = summarise(answers, fitted)
    if group_column:
        metrics["by_group"] = {"column": group_column, "groups": by_group(answers, group_column)}
    metrics["consistency_rule"] = "applied" if lesions is not None and kind == "3d" else "not applied"
    return metrics, answer_rows(answers, group_column)


def median_ms(fn: Callable[[], Any], runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t0))
    return float(statistics.median(times))


def time_classifier(classifier: Classifier, studies: Path, case_id: str, kind: str, runs: int = 20) -> dict[str, Any]:
    """Median model-only and end-to-end milliseconds for one case (after warm-up)."""
    model = classifier.stores[kind].get()
    image = load_image(studies, case_id, ClassPreprocess.from_meta(model.meta))
    model_ms = median_ms(lambda: classifier.predict(image, kind, model), runs)
    e2e_ms = median_ms(lambda: classify_datastore_case(classifier, studies, case_id, kind), runs)
    return {"case_id": case_id, "runs": runs, "warmup": 3, "model_ms_median": round(model_ms, 2),
            "end_to_end_ms_median": round(e2e_ms, 2), "reduced_precision": classifier.uses_reduced(kind),
            "device": str(classifier.stores[kind].device)}  # fmt: skip
