"""Fit the lesion-feature tumour-type model (``inference/lesion_type.py``) on a labelled datastore.

1. Every 3D case whose ``tumor_type`` is one of the classes is segmented by the served
   segmentation model and described by ``lesion_features`` -- the very calls inference
   makes, so the model learns the outlines it will be given (false positives on tumour-free
   brains included), not idealised reference labels.
2. A seeded split by patient group, stratified by class, holds out ``val_fraction``.
3. Multinomial logistic regression with an L2 penalty on standardised features, fitted on
   the training split by L-BFGS (convex: the same answer whatever the start). Fourteen
   features and four classes make 60 parameters, so a few hundred cases are plenty; a
   linear model also extrapolates tamely to feature values it never saw.
4. The temperature is fitted on the held-out split (``calibration.fit_temperature``), and
   the record keeps the held-out accuracy, NLL before/after and the split, so the model
   card can say how it was made.
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
from .result import TrainResult

logger = logging.getLogger(__name__)

DEFAULT_L2 = 1e-3


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


def split_groups(fs: FeatureSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, val) masks: seeded, by patient group, about ``val_fraction`` of each class held out."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, y in dict(zip(fs.groups, fs.y.tolist())).items():
        by_class[int(y)].append(g)
    rng = random.Random(seed)
    val_groups: set[str] = set()
    for cls in sorted(by_class):
        groups = sorted(by_class[cls])
        rng.shuffle(groups)
        n_val = int(round(val_fraction * len(groups))) if len(groups) >= 2 else 0
        val_groups.update(groups[:n_val])
    val = np.array([g in val_groups for g in fs.groups], dtype=bool)
    return ~val, val


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


def fit_lesion_type(fs: FeatureSet, val_fraction: float = 0.2, seed: int = 0, l2: float = DEFAULT_L2,
                    source: str = "") -> LesionTypeModel:  # fmt: skip
    """Fit on the training split, calibrate on the held-out split, and record both."""
    present = sorted(set(fs.y.tolist()))
    if len(fs.y) < 8 or len(present) < 2:
        raise InputError(f"the lesion-type model needs at least 8 labelled 3D cases of at least 2 tumour types; "
                         f"found {len(fs.y)} case(s) of {len(present)} type(s)")  # fmt: skip
    train, val = split_groups(fs, val_fraction, seed)
    mean = fs.x[train].mean(axis=0)
    scale = fs.x[train].std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    coef, intercept = fit_logistic((fs.x[train] - mean) / scale, fs.y[train], len(TUMOR_CLASSES), l2)
    model = LesionTypeModel(mean, scale, coef, intercept, 1.0, "unfitted")
    record: dict[str, Any] = {
        "fitted": time.strftime("%Y-%m-%d %H:%M:%S"), "source": source, "l2": l2, "seed": seed,
        "val_fraction": val_fraction, "segmentation": "the served segmentation model's outlines",
        "cases": {"train": int(train.sum()), "validation": int(val.sum())},
        "per_class_train": {TUMOR_CLASSES[c]: int((fs.y[train] == c).sum()) for c in range(len(TUMOR_CLASSES))},
        "validation_ids": [c for c, v in zip(fs.case_ids, val) if v],
    }  # fmt: skip
    temperature = 1.0
    if val.any():
        z = model.logits(fs.x[val])
        temperature = fit_temperature(z, fs.y[val])
        probs = calibrated_probabilities(z, temperature)
        record["validation"] = {
            "accuracy": round(float((probs.argmax(axis=1) == fs.y[val]).mean()), 4),
            "nll_before": round(nll(z, fs.y[val], 1.0), 4), "nll_after": round(nll(z, fs.y[val], temperature), 4),
        }  # fmt: skip
    train_acc = float((model.logits(fs.x[train]).argmax(axis=1) == fs.y[train]).mean())
    record["train_accuracy"] = round(train_acc, 4)
    fitted = repr((coef.round(6).tolist(), intercept.round(6).tolist(), round(temperature, 6)))
    digest = hashlib.sha256(fitted.encode()).hexdigest()[:8]
    version = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"
    logger.info("lesion-type model %s: train accuracy %.3f, validation %s, temperature %.3f", version, train_acc,
                record.get("validation"), temperature)  # fmt: skip
    return LesionTypeModel(mean, scale, coef, intercept, float(temperature), version, record=record)


def held_out_accuracy(model: LesionTypeModel, fs: FeatureSet, ids: list[str]) -> float | None:
    """Accuracy of ``model`` on the cases ``ids`` of ``fs`` (None when there are none)."""
    mask = np.isin(fs.case_ids, ids)
    if not mask.any():
        return None
    return round(float((model.logits(fs.x[mask]).argmax(axis=1) == fs.y[mask]).mean()), 4)


def refit(
    studies: Path, segmenter: Segmenter, served: LesionTypeModel | None, out: Path, val_fraction: float, seed: int
) -> TrainResult | None:
    """Refit on the datastore's labelled 3D cases; publish to ``out`` when it is at least as good as ``served``.

    What *Train* on the classification model does for the lesion-type model: the cases are
    described by the served segmentation, a model is fitted on a seeded split and compared
    with the served lesion-type model on the held-out cases (accuracy; the new one wins
    ties, being fitted on this site's cases). None when the datastore has fewer than 8
    labelled 3D cases of at least two types (nothing is segmented then).
    """
    cases = labelled_cases(studies, "3d")
    if len(cases) < 8 or len({c for _, c, _ in cases}) < 2:
        logger.info("lesion-type model: not refitted, %d labelled 3D case(s) (at least 8 of 2 types needed)",
                    len(cases))  # fmt: skip
        return None
    start = time.monotonic()
    fs = describe_cases(studies, segmenter)
    try:
        model = fit_lesion_type(fs, val_fraction, seed, source=f"{studies.name}: {len(fs.y)} cases")
    except InputError as exc:
        logger.info("lesion-type model: not refitted (%s)", exc)
        return None
    val_ids = model.record["validation_ids"]
    new_acc = held_out_accuracy(model, fs, val_ids)
    old_acc = held_out_accuracy(served, fs, val_ids) if served is not None else None
    publish = new_acc is not None and (old_acc is None or new_acc >= old_acc)
    basis = {"rule": "held-out accuracy, the new model wins ties", "validation_cases": len(val_ids),
             "new": new_acc, "served": old_acc, "served_version": served.version if served else None}  # fmt: skip
    if publish:
        save_lesion_type(model, out)
    verdict = "published" if publish else "not published"
    decision = f"{verdict}: held-out accuracy {new_acc} vs served {old_acc} on {len(val_ids)} case(s)"
    logger.info("lesion-type model %s: %s", model.version, decision)
    return TrainResult("finished", publish, decision, str(out) if publish else None, model.version, 0, 0, new_acc,
                       old_acc, model.record.get("validation", {}), round(time.monotonic() - start, 1),
                       decision_basis=basis)  # fmt: skip
