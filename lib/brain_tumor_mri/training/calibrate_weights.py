"""Calibrate published classification weights on their validation cases, in place.

One implementation for two callers: ``brain-tumor calibrate`` (post hoc, for any weights)
and the training engine, which calibrates every classifier it publishes on the validation
split of the same run, so weights retrained from Slicer answer with calibrated
probabilities and fitted low-confidence thresholds just as the shipped ones do. The fit runs
the served inference path (``inference/classifier.py``) on the datastore's cases, so the
temperature applies to exactly the logits a served answer sees.

The weights file is never touched (its sha256 stays valid); the sidecar is replaced
atomically with a ``calibration`` block and a ``-cal<digest>`` version suffix, which a
running server picks up on its next request.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.classifier import Classifier
from ..labels import TUMOR_CLASSES
from ..networks.checkpoint import write_fitted_block
from .calibration import (
    DEFAULT_ACCEPTANCE,
    DEFAULT_MAX_PROBABILITY_MIN,
    calibration_digest,
    calibration_record,
)
from .class_eval import Answer, collect_answers

logger = logging.getLogger(__name__)


def recorded_val_ids(meta: dict[str, Any]) -> set[str]:
    """Validation case ids a training run recorded in the sidecar (engine and older layouts)."""
    training = meta.get("training") or {}
    ids = training.get("val_cases") or (training.get("data") or {}).get("val_ids") or []
    return {str(i) for i in ids}


def calibration_answers(classifier: Classifier, studies: Path, kind: str, split: str) -> list[Answer]:
    """In-class answers on the calibration cases (``split="val"``: the sidecar's validation ids only)."""
    answers = [a for a in collect_answers(classifier, studies, kind) if a.true_type in TUMOR_CLASSES]
    if split == "val":
        val_ids = recorded_val_ids(classifier.stores[kind].get().meta)
        if not val_ids:
            raise ValueError(f"{kind}: the sidecar records no validation ids; use --split all on held-out cases")
        answers = [a for a in answers if a.case_id in val_ids]
    if not answers:
        raise ValueError(f"no labelled {kind} cases to calibrate on in {studies}")
    return answers


def write_calibration(weights: Path, record: dict[str, Any], out_dir: Path | None = None) -> dict[str, Any]:
    """Put ``record`` into the sidecar of ``weights`` (in place, or beside a copy in ``out_dir``).

    Refuses a pair whose weights do not match the sidecar's sha256. Returns the new sidecar.
    """
    meta = write_fitted_block(weights, "classification", "calibration", record, "cal", calibration_digest(record),
                              out_dir)  # fmt: skip
    logger.info("calibrated %s: temperature %.3f, version %s", weights.name, record["temperature"],
                meta["version"])  # fmt: skip
    return meta


def calibrate_weights(
    classifier: Classifier, studies: Path, kind: str, weights: Path, *, split: str = "val",
    acceptance: float = DEFAULT_ACCEPTANCE, max_probability_min: float = DEFAULT_MAX_PROBABILITY_MIN,
    out_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit temperature and OOD thresholds of ``classifier``'s ``kind`` model; write them; the new sidecar."""
    answers = calibration_answers(classifier, studies, kind, split)
    logits = np.array([a.result.logits for a in answers])
    labels = np.array([TUMOR_CLASSES.index(a.true_type) for a in answers])
    groups = sorted({a.group for a in answers})
    fitted_on = {"studies": str(Path(studies).resolve()), "split": split, "n": len(answers),
                 "n_patients": len(groups), "class_counts": dict(Counter(a.true_type for a in answers)),
                 "groups": groups, "image_sha256": sorted(a.image_sha for a in answers)}  # fmt: skip
    command = (f"brain-tumor calibrate classification {studies} --kind {kind} --split {split} "
               f"--acceptance {acceptance:g} --max-probability-min {max_probability_min:g}")  # fmt: skip
    features = np.array([a.result.features for a in answers]) if all(a.result.features for a in answers) else None
    record = calibration_record(logits, labels, acceptance=acceptance, max_probability_min=max_probability_min,
                                fitted_on=fitted_on, command=command, features=features)  # fmt: skip
    return write_calibration(weights, record, out_dir)
