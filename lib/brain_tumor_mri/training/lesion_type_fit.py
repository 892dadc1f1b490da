"""Fit the lesion-feature tumour-type model (``inference/lesion_type.py``) on a labelled datastore.

1. Every 3D case whose ``tumor_type`` is one of the classes is segmented by the served
   segmentation model and described by ``lesion_features`` -- the very calls inference
   makes, so the model learns the outlines it will be given (false positives on tumour-free
   brains included), not idealised reference labels.
2. Multinomial logistic regression with an L2 penalty on standardised features, fitted by
   L-BFGS (convex: the same answer whatever the start). Fourteen features and four classes
   make 60 parameters, so a few hundred cases are plenty; a linear model also extrapolates
   tamely to feature values it never saw.
3. Cross-validation by patient group, stratified by class (``fold_assignment``): every case
   gets logits from a model fitted without its fold (``out_of_fold_logits``). Those logits
   judge the recipe (accuracy, NLL, ECE of a model that never saw the case) and fit the
   temperature; the served model is then fitted on every case. Why not one held-out split:
   with 800 cases a 20 % split calibrates on 160 and fits on 640; the out-of-fold logits
   calibrate on all of them and the model keeps every case (measured on 800 generated cases,
   scored on 100 cases of an unseen anatomy in one run, on single-pass segmentation outlines:
   split model, T 1.108, accuracy 0.900 and ECE 0.103; out-of-fold, T 1.046, accuracy 0.920
   and ECE 0.091).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ..imageio import InputError, load_sequences, nonzero_mask
from ..inference.confidence import calibrated_probabilities
from ..inference.lesion_features import FEATURE_NAMES, lesion_features
from ..inference.lesion_type import LesionTypeModel, save_lesion_type
from ..inference.segmenter import Segmenter
from ..labels import TUMOR_CLASSES
from ..layout import image_path, resolve_case
from .calibration import fit_temperature, nll
from .class_data import labelled_cases
from .class_metrics import expected_calibration_error
from .result import TrainResult

logger = logging.getLogger(__name__)

DEFAULT_L2 = 1e-3
#: Folds of the cross-validation that calibrates the model and judges the refit.
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class FeatureSet:
    """Features (N, F), class indices (N,), case ids and patient groups of the described cases."""

    x: np.ndarray
    y: np.ndarray
    case_ids: list[str]
    groups: list[str]


def describe_cases(studies: Path, segmenter: Segmenter) -> FeatureSet:
    """Segment every labelled 3D case of ``studies`` and compute its lesion features."""
    rows, ys, ids, groups = [], [], [], []
    cases = labelled_cases(studies, "3d")
    start = time.monotonic()
    for i, (case_id, cls, group) in enumerate(cases, 1):
        path = image_path(studies, case_id)
        try:
            if path is None:
                raise InputError("no image")
            stack, affine, _ = load_sequences(resolve_case(path).sequences, allow_missing=False)
        except InputError as exc:
            logger.warning("skipping %s: %s", case_id, exc)
            continue
        label = segmenter.segment(stack, affine).unfiltered  # what serving reads the type from
        rows.append(lesion_features(label, nonzero_mask(stack), affine))
        ys.append(cls)
        ids.append(case_id)
        groups.append(group)
        if i % 50 == 0:
            logger.info("described %d/%d cases (%.0f s)", i, len(cases), time.monotonic() - start)
    x = np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
    return FeatureSet(x, np.asarray(ys, dtype=np.int64), ids, groups)


def fold_assignment(fs: FeatureSet, folds: int, seed: int) -> np.ndarray:
    """Fold index (N,) per case: seeded, by patient group, each class dealt evenly over the folds.

    At most one fold per patient group (a small datastore gets fewer folds); the classes'
    groups are dealt round-robin in one running order so the fold sizes differ by at most one.
    """
    group_class = dict(zip(fs.groups, fs.y.tolist()))
    n_folds = max(1, min(folds, len(group_class)))
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, y in group_class.items():
        by_class[int(y)].append(g)
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for cls in sorted(by_class):
        groups = sorted(by_class[cls])
        rng.shuffle(groups)
        for g in groups:
            fold_of[g] = dealt % n_folds
            dealt += 1
    return np.array([fold_of[g] for g in fs.groups], dtype=np.int64)


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(coef (C, F), intercept (C,)) minimising mean cross-entropy + ``l2`` * ||coef||^2 on standardised ``x``."""
    n, f = x.shape
    onehot = np.eye(n_classes)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: n_classes * f].reshape(n_classes, f), theta[n_classes * f :]
        z = x @ w.T + b
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -float((onehot * logp).sum()) / n + l2 * float((w**2).sum())
        err = (np.exp(logp) - onehot) / n
        grad = np.concatenate([(err.T @ x + 2 * l2 * w).ravel(), err.sum(axis=0)])
        return value, grad

    res = minimize(loss, np.zeros(n_classes * (f + 1)), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    if not res.success:
        logger.warning("lesion-type fit: optimiser stopped early (%s)", res.message)
    return res.x[: n_classes * f].reshape(n_classes, f), res.x[n_classes * f :]


def fit_uncalibrated(x: np.ndarray, y: np.ndarray, l2: float) -> LesionTypeModel:
    """Standardise on ``x``, fit the regression; temperature 1 (calibration comes from the folds)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    coef, intercept = fit_logistic((x - mean) / scale, y, len(TUMOR_CLASSES), l2)
    return LesionTypeModel(mean, scale, coef, intercept, 1.0, "unfitted")


def out_of_fold_logits(fs: FeatureSet, fold: np.ndarray, l2: float) -> np.ndarray:
    """Logits (N, C) where each case's row comes from a model fitted on the other folds only."""
    z = np.zeros((len(fs.y), len(TUMOR_CLASSES)))
    for k in np.unique(fold):
        held = fold == k
        z[held] = fit_uncalibrated(fs.x[~held], fs.y[~held], l2).logits(fs.x[held])
    return z


def fit_lesion_type(fs: FeatureSet, folds: int = DEFAULT_FOLDS, seed: int = 0, l2: float = DEFAULT_L2,
                    source: str = "") -> LesionTypeModel:  # fmt: skip
    """Cross-validate the recipe, fit the temperature on the out-of-fold logits, fit on every case.

    The record keeps the cross-validated accuracy, NLL and ECE before/after the temperature
    and each case's out-of-fold answer (``cv_predictions``), which *Train*'s publish
    decision compares with the served model case by case.
    """
    if folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds; got {folds}")
    present = sorted(set(fs.y.tolist()))
    if len(fs.y) < 8 or len(present) < 2:
        raise InputError(f"the lesion-type model needs at least 8 labelled 3D cases of at least 2 tumour types; "
                         f"found {len(fs.y)} case(s) of {len(present)} type(s)")  # fmt: skip
    fold = fold_assignment(fs, folds, seed)
    n_folds = int(fold.max()) + 1
    oof = out_of_fold_logits(fs, fold, l2)
    temperature = fit_temperature(oof, fs.y)  # two types -> two patient groups -> at least 2 folds
    fitted_model = fit_uncalibrated(fs.x, fs.y, l2)
    before = calibrated_probabilities(oof, 1.0)
    after = calibrated_probabilities(oof, temperature)
    record: dict[str, Any] = {
        "fitted": time.strftime("%Y-%m-%d %H:%M:%S"), "source": source, "l2": l2, "seed": seed,
        "segmentation": "the served segmentation model's outlines",
        "cases": len(fs.y), "folds": n_folds,
        "per_class": {TUMOR_CLASSES[c]: int((fs.y == c).sum()) for c in range(len(TUMOR_CLASSES))},
        "validation": {
            "scheme": f"{n_folds}-fold cross-validation by patient group (out-of-fold answers)",
            "accuracy": round(float((oof.argmax(axis=1) == fs.y).mean()), 4),
            "nll_before": round(nll(oof, fs.y, 1.0), 4), "nll_after": round(nll(oof, fs.y, temperature), 4),
            "ece_before": round(expected_calibration_error(before, fs.y), 4),
            "ece_after": round(expected_calibration_error(after, fs.y), 4),
        },
        "cv_predictions": dict(zip(fs.case_ids, oof.argmax(axis=1).tolist())),
    }  # fmt: skip
    coef, intercept = fitted_model.coef, fitted_model.intercept
    train_acc = float((fitted_model.logits(fs.x).argmax(axis=1) == fs.y).mean())
    record["train_accuracy"] = round(train_acc, 4)
    fitted = repr((coef.round(6).tolist(), intercept.round(6).tolist(), round(temperature, 6)))
    digest = hashlib.sha256(fitted.encode()).hexdigest()[:8]
    version = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"
    logger.info("lesion-type model %s: train accuracy %.3f, cross-validated %s, temperature %.3f", version,
                train_acc, record["validation"], temperature)  # fmt: skip
    return LesionTypeModel(fitted_model.mean, fitted_model.scale, coef, intercept, float(temperature), version,
                           record=record)  # fmt: skip


def refit(
    studies: Path, segmenter: Segmenter, served: LesionTypeModel | None, out: Path, seed: int,
    folds: int = DEFAULT_FOLDS,
) -> TrainResult | None:  # fmt: skip
    """Refit on the datastore's labelled 3D cases; publish to ``out`` when it is at least as good as ``served``.

    What *Train* on the classification model does for the lesion-type model: the cases are
    described by the served segmentation and the recipe is cross-validated over them
    (``fit_lesion_type``). The decision is paired, case by case, over every labelled case:
    the refit's out-of-fold answer (from a model that never saw the case) against the served
    model's answer; the refit is published when it is right at least as often (it wins ties,
    being fitted on this site's cases). A served model fitted on these same cases answers
    them in-sample, which only makes the rule more conservative. None when the datastore has
    fewer than 8 labelled 3D cases of at least two types (nothing is segmented then).
    """
    cases = labelled_cases(studies, "3d")
    if len(cases) < 8 or len({c for _, c, _ in cases}) < 2:
        logger.info("lesion-type model: not refitted, %d labelled 3D case(s) (at least 8 of 2 types needed)",
                    len(cases))  # fmt: skip
        return None
    start = time.monotonic()
    fs = describe_cases(studies, segmenter)
    try:
        model = fit_lesion_type(fs, folds, seed, source=f"{studies.name}: {len(fs.y)} cases")
    except InputError as exc:
        logger.info("lesion-type model: not refitted (%s)", exc)
        return None
    cv = model.record["cv_predictions"]
    new_right = np.array([cv[c] == y for c, y in zip(fs.case_ids, fs.y.tolist())])
    new_acc = round(float(new_right.mean()), 4)
    old_acc: float | None = None
    basis: dict[str, Any] = {
        "rule": "cross-validated accuracy of the refit vs the served model on every labelled case, the refit wins ties",
        "cases": len(fs.y), "folds": model.record["folds"], "new": new_acc, "served": None,
        "served_version": served.version if served else None,
    }  # fmt: skip
    if served is not None:
        old_right = served.logits(fs.x).argmax(axis=1) == fs.y
        old_acc = round(float(old_right.mean()), 4)
        basis.update(served=old_acc, only_new_right=int((new_right & ~old_right).sum()),
                     only_served_right=int((old_right & ~new_right).sum()))  # fmt: skip
    publish = old_acc is None or new_acc >= old_acc
    if publish:
        save_lesion_type(model, out)
    verdict = "published" if publish else "not published"
    decision = f"{verdict}: cross-validated accuracy {new_acc} vs served {old_acc} on {len(fs.y)} case(s)"
    logger.info("lesion-type model %s: %s", model.version, decision)
    return TrainResult("finished", publish, decision, str(out) if publish else None, model.version, 0, 0, new_acc,
                       old_acc, model.record.get("validation", {}), round(time.monotonic() - start, 1),
                       decision_basis=basis)  # fmt: skip
