"""Held-out evaluation of the served classifiers on a labelled datastore, plus timing.

Runs exactly the inference path (``Classifier.classify_image`` / ``classify_case``) on
every labelled case of a datastore that training never saw, and measures model time
(forward + softmax on a preprocessed input) and end-to-end time (read + preprocess +
model) as medians over repeated runs after warm-up.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..imageio import InputError, load_sequences
from ..inference.classifier import Classifier, ClassResult
from ..labels import TUMOR_CLASSES
from ..layout import image_path, resolve_case
from ..transforms.classify_preprocess import ClassPreprocess
from .class_data import labelled_cases, load_image
from .class_metrics import classification_metrics

logger = logging.getLogger(__name__)


def classify_datastore_case(classifier: Classifier, studies: Path, case_id: str, kind: str) -> ClassResult:
    """Classify one datastore case through the public inference entry points."""
    path = image_path(studies, case_id)
    if path is None:
        raise InputError(f"{case_id}: no image in the datastore")
    if kind == "2d":
        return classifier.classify_image(path)
    stack, affine, _ = load_sequences(resolve_case(path).sequences, allow_missing=False)
    return classifier.classify_case(stack, affine)


def evaluate_datastore(classifier: Classifier, studies: Path, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-case rows for every labelled case of ``kind`` in ``studies``."""
    rows, labels, probs = [], [], []
    for case_id, label, group in labelled_cases(studies, kind):
        try:
            res = classify_datastore_case(classifier, studies, case_id, kind)
        except InputError as exc:
            logger.warning("skipping %s: %s", case_id, exc)
            continue
        labels.append(label)
        probs.append([res.probabilities[c] for c in TUMOR_CLASSES])
        rows.append({"case_id": case_id, "group": group, "true": TUMOR_CLASSES[label], "predicted": res.tumor_type,
                     **{f"p_{c}": round(res.probabilities[c], 6) for c in TUMOR_CLASSES}})  # fmt: skip
    if not rows:
        raise ValueError(f"no labelled {kind} cases to evaluate in {studies}")
    metrics = classification_metrics(labels, np.asarray(probs), TUMOR_CLASSES)
    metrics["model_version"] = res.model_version
    return metrics, rows


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
