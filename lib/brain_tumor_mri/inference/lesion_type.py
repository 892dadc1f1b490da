"""Tumour type of a 3D case from its segmentation: a small calibrated model over lesion features.

The 3D image classifier (a CNN on the whole four-sequence volume) generalised poorly: on a
brain it never saw it answered barely better than chance. Where a lesion lies and how it is
built (``lesion_features``) tells the types apart more reliably and carries over to other
anatomies, so when this model is served the 3D answer comes from it, computed on the
served segmentation of the same case; the image classifier's answer is kept in the params
as a second opinion (``image_model``) and its input checks still apply.

The model is a multinomial logistic regression over standardised features (a JSON file:
``lesion_type.json``, a few kB), fitted by ``brain-tumor train lesion-type``
(``training/lesion_type_fit.py``) on segmentations made by the served segmentation model,
so it learns what that model's outlines look like, false positives included; its
temperature is fitted on held-out cases. Loading checks the file's shape and feature order.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import TUMOR_CLASSES
from ..layout import LESION_TYPE_WEIGHTS, atomic_write_json, published_dir
from .classifier import ClassResult, answer_for
from .confidence import ConfidencePolicy, assess, calibrated_probabilities
from .lesion_features import FEATURE_NAMES

logger = logging.getLogger(__name__)

FORMAT = 1
KIND = "lesion_type"


@dataclass(frozen=True)
class LesionTypeModel:
    """Standardisation, coefficients and temperature of the lesion-feature classifier."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (C, F)
    intercept: np.ndarray  # (C,)
    temperature: float
    version: str
    classes: tuple[str, ...] = TUMOR_CLASSES
    features: tuple[str, ...] = FEATURE_NAMES
    record: dict[str, Any] = field(default_factory=dict, compare=False)  # training and evaluation record

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits (C,) or (N, C) of feature vector(s) in ``features`` order."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "format": FORMAT, "version": self.version, "classes": list(self.classes),
                "features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "temperature": self.temperature, "record": self.record}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LesionTypeModel:
        """Parse and check a model dict; ``ValueError`` naming what is wrong."""
        if d.get("kind") != KIND or d.get("format") != FORMAT:
            raise ValueError(f"not a lesion-type model of format {FORMAT} (kind {d.get('kind')!r})")
        if tuple(d.get("features", ())) != FEATURE_NAMES:
            raise ValueError("lesion-type model was fitted on other features than this code computes")
        if tuple(d.get("classes", ())) != TUMOR_CLASSES:
            raise ValueError(f"lesion-type model classes {d.get('classes')} are not {list(TUMOR_CLASSES)}")
        c, f = len(TUMOR_CLASSES), len(FEATURE_NAMES)
        mean, scale = np.asarray(d["mean"], float), np.asarray(d["scale"], float)
        coef, intercept = np.asarray(d["coef"], float), np.asarray(d["intercept"], float)
        t = float(d.get("temperature", 1.0))
        shapes_ok = mean.shape == (f,) and scale.shape == (f,) and coef.shape == (c, f) and intercept.shape == (c,)
        if not shapes_ok or not np.all(scale > 0) or not (np.isfinite(t) and t > 0):
            raise ValueError("lesion-type model has malformed coefficients, scales or temperature")
        if not all(np.all(np.isfinite(a)) for a in (mean, coef, intercept)):
            raise ValueError("lesion-type model has non-finite coefficients")
        return cls(mean, scale, coef, intercept, t, str(d.get("version", "unknown")), record=dict(d.get("record", {})))


def load_lesion_type(path: Path) -> LesionTypeModel:
    """Read a ``lesion_type.json``; ``ValueError`` when it is unreadable or malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read lesion-type model {Path(path).name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"lesion-type model {Path(path).name} is not a JSON object")
    return LesionTypeModel.from_dict(data)


def save_lesion_type(model: LesionTypeModel, path: Path) -> None:
    """Write ``model`` atomically (a reader never sees half a file)."""
    atomic_write_json(path, model.to_dict(), indent=1, sort_keys=False)


class LesionTypeStore:
    """The served lesion-type model: the datastore's published one first, else the shipped one.

    Re-read when the file that would be served changes (path or modification time), so a
    model published by training is served by the next answer. A malformed file is logged
    and not served (the 3D answer then comes from the image classifier).
    """

    def __init__(self, published: Path, shipped: Path) -> None:
        self.published, self.shipped = Path(published), Path(shipped)
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._model: LesionTypeModel | None = None

    def path(self) -> Path | None:
        """The file that would be served now, or None."""
        for p in (self.published, self.shipped):
            if p.is_file():
                return p
        return None

    def get(self) -> LesionTypeModel | None:
        """The current model, or None when there is none (or it is malformed)."""
        path = self.path()
        if path is None:
            return None
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return None
        with self._lock:
            if key != self._key:
                self._key = key
                try:
                    self._model = load_lesion_type(path)
                    logger.info("loaded lesion-type model %s (version %s)", path.name, self._model.version)
                except ValueError as exc:
                    logger.error("%s; the 3D answer falls back to the image classifier", exc)
                    self._model = None
            return self._model


def lesion_type_store(studies: Path, weights_dir: Path) -> LesionTypeStore:
    """The lesion-type model a datastore is served with: its published file first, then the shipped one."""
    return LesionTypeStore(published_dir(studies) / LESION_TYPE_WEIGHTS, weights_dir / LESION_TYPE_WEIGHTS)


def lesion_type_answer(
    model: LesionTypeModel, features: np.ndarray, image_result: ClassResult, segmentation: str
) -> ClassResult:
    """The 3D answer from ``features`` of the case's segmentation; ``image_result`` becomes the second opinion.

    Confidence: the calibrated top probability (``ConfidencePolicy`` defaults) plus the image
    classifier's input checks (a case that does not look like a brain MRI stays ``low``).
    """
    z = model.logits(features)
    policy = ConfidencePolicy(temperature=model.temperature, source="calibrated")
    probs = calibrated_probabilities(z, model.temperature)
    best = model.classes[int(np.argmax(probs))]
    input_reasons = [r for r in image_result.confidence.reasons if r.code.startswith("input.")]
    confidence = assess(probs, z, policy, input_reasons)
    second = {"best_guess": image_result.best_guess, "probabilities": dict(image_result.probabilities),
              "model_version": image_result.model_version}  # fmt: skip
    return replace(
        image_result,
        tumor_type=answer_for(best, confidence),
        probabilities={c: float(p) for c, p in zip(model.classes, probs)},
        model_version=f"lesion-type {model.version} on segmentation {segmentation}",
        best_guess=best,
        confidence=confidence,
        logits=tuple(float(v) for v in z),
        features=(),
        method="lesion_features",
        explanation={
            "lesion_features": {k: round(float(v), 4) for k, v in zip(model.features, features)},
            "image_model": second,
        },  # fmt: skip
    )
