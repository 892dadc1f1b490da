"""Tumour-type classification of a 2D image or a four-sequence 3D case, with how sure it is.

Each input kind has its own warm model (``ModelStore``); the preprocessing settings come
from that model's sidecar, so a retrained model with another input size still meets
matching inputs. Logits are divided by the sidecar's calibration temperature (1.0 when
absent) and every answer carries a confidence level with reasons (``confidence.py``: input
checks, calibrated top probability, energy). Used by the infer task, the ``classify``
command and evaluation.

Answer contract (``ClassResult.as_params``): ``tumor_type`` is one of the classes only when
confidence is high; otherwise ``"uncertain"`` (or ``"other"`` when the consistency rule sees
a pattern outside the classes), and ``best_guess`` always names the most probable class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..labels import OTHER_ANSWER, TUMOR_CLASSES, UNCERTAIN_ANSWER
from ..layout import CLASS_WEIGHTS
from ..networks.checkpoint import LoadedModel
from ..networks.store import ModelStore
from ..runtime import autocast
from ..transforms.classify_preprocess import (
    ClassPreprocess,
    load_image_2d_raw,
    prepare_case_3d,
    prepare_image,
    to_grey,
)
from .confidence import HIGH, Confidence, ConfidencePolicy, assess, calibrated_probabilities
from .feature_ood import logits_and_features
from .input_checks import Reason, check_case_3d, check_image_2d

logger = logging.getLogger(__name__)

WEIGHTS_2D = CLASS_WEIGHTS["2d"]
WEIGHTS_3D = CLASS_WEIGHTS["3d"]


@dataclass(frozen=True)
class ClassResult:
    """An answer: tumour type (or uncertain/other), calibrated probabilities, confidence, provenance."""

    tumor_type: str  # a class when confidence is high, else UNCERTAIN_ANSWER / OTHER_ANSWER
    probabilities: dict[str, float]  # softmax(logits / T), T from the sidecar
    model_version: str
    input_kind: str  # "2d" | "3d"
    best_guess: str  # the most probable class, whatever the confidence
    confidence: Confidence
    logits: tuple[float, ...] = field(default=(), repr=False)  # raw, before the temperature
    features: tuple[float, ...] = field(default=(), repr=False, compare=False)  # penultimate (feature_ood.py)
    input_stats: dict[str, Any] = field(default_factory=dict, repr=False)
    consistency: dict[str, Any] | None = None  # 3D: the segmentation cross-check (consistency.py)
    method: str = "image"  # "image" (a network on the image) | "lesion_features" (inference/lesion_type.py)
    explanation: dict[str, Any] | None = None  # lesion_features: the features and the image model's opinion

    def as_params(self) -> dict[str, Any]:
        """JSON-ready dict (also lists the classes in output order); logits are left out."""
        params: dict[str, Any] = {
            "tumor_type": self.tumor_type,
            "best_guess": self.best_guess,
            "probabilities": dict(self.probabilities),
            "classes": list(self.probabilities),
            "confidence": {**self.confidence.as_params(), "input_stats": _rounded(self.input_stats)},
            "model_version": self.model_version,
            "input_kind": self.input_kind,
            "method": self.method,
        }
        if self.explanation is not None:
            params.update(self.explanation)
        if self.consistency is not None:
            params["consistency"] = self.consistency
        return params


def _rounded(stats: dict[str, Any]) -> dict[str, Any]:
    """Input statistics rounded for display."""
    return {k: [round(float(x), 3) for x in v] if isinstance(v, list) else round(float(v), 4) for k, v in stats.items()}


def answer_for(best_guess: str, confidence: Confidence, other: bool = False) -> str:
    """The ``tumor_type`` to report: the class when confident, else ``uncertain`` (``other`` if flagged)."""
    if other:
        return OTHER_ANSWER
    return best_guess if confidence.level == HIGH else UNCERTAIN_ANSWER


def store_expectations(input_kind: str) -> dict[str, Any]:
    """Sidecar keys a classification model store must match for ``input_kind``."""
    return {"input_kind": input_kind, "classes": list(TUMOR_CLASSES)}


class Classifier:
    """Runs the served 2D and 3D classification models; thread-safe, eval mode only."""

    def __init__(self, store_2d: ModelStore, store_3d: ModelStore, reduced_precision: bool) -> None:
        self.stores = {"2d": store_2d, "3d": store_3d}
        self.reduced = reduced_precision
        self._policies: dict[str, tuple[LoadedModel, ConfidencePolicy]] = {}

    def uses_reduced(self, input_kind: str) -> bool:
        """Whether to autocast ``input_kind``: 3D as configured, 2D only on a GPU (see below)."""
        # On this CPU the small 2D DenseNet ran slower in bf16 than in fp32 (35 vs 24 ms per slice).
        return self.reduced and (input_kind == "3d" or self.stores[input_kind].device.type == "cuda")

    def available(self, input_kind: str | None = None) -> bool:
        """Whether weights exist for ``input_kind`` (or for any kind when None)."""
        kinds = [input_kind] if input_kind else list(self.stores)
        return any(self.stores[k].available() for k in kinds)

    @torch.inference_mode()
    def forward(self, image: torch.Tensor, input_kind: str, model: LoadedModel) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (C,) and penultimate features of one preprocessed image (C, *spatial)."""
        store = self.stores[input_kind]
        x = image[None].to(store.device)
        if store.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(store.device, self.uses_reduced(input_kind)):
            out, feats = logits_and_features(model.network, x)
        logits = out.float()[0].cpu().numpy().astype(np.float64)
        return logits, None if feats is None else feats.float()[0].cpu().numpy().astype(np.float64)

    def predict(
        self,
        image: torch.Tensor,
        input_kind: str,
        model: LoadedModel | None = None,
        input_reasons: list[Reason] | None = None,
        input_stats: dict[str, Any] | None = None,
    ) -> ClassResult:
        """Classify one preprocessed image (C, *spatial) with ``model`` (default: the served one)."""
        model = model or self.stores[input_kind].get()
        z, feats = self.forward(image, input_kind, model)
        policy = self.policy(model, input_kind)
        probs = calibrated_probabilities(z, policy.temperature)
        classes = [str(c) for c in model.meta.get("classes", TUMOR_CLASSES)]
        best = classes[int(np.argmax(probs))]
        confidence = assess(probs, z, policy, list(input_reasons or []), feats)
        return ClassResult(
            tumor_type=answer_for(best, confidence),
            probabilities={c: float(p) for c, p in zip(classes, probs)},
            model_version=model.version,
            input_kind=input_kind,
            best_guess=best,
            confidence=confidence,
            logits=tuple(float(v) for v in z),
            features=() if feats is None else tuple(float(v) for v in feats),
            input_stats=dict(input_stats or {}),
        )

    def policy(self, model: LoadedModel, input_kind: str) -> ConfidencePolicy:
        """The confidence policy of ``model``'s sidecar, parsed once per loaded model of each kind."""
        cached = self._policies.get(input_kind)
        if cached is None or cached[0] is not model:
            cached = (model, ConfidencePolicy.from_meta(model.meta))
            self._policies[input_kind] = cached  # a hot reload brings a new model object, so a new policy
        return cached[1]

    def classify_image(self, path: str | Path) -> ClassResult:
        """Classify a 2D image file (PNG/JPEG or 2D NIfTI/NRRD), checking it looks like an MR slice."""
        model = self.stores["2d"].get()  # one model for spec and forward, even across a reload
        name = Path(path).name
        raw = load_image_2d_raw(path)
        grey = to_grey(raw, name)
        reasons, stats = check_image_2d(raw, grey)
        image = prepare_image(grey, ClassPreprocess.from_meta(model.meta).size, name)
        return self.predict(image, "2d", model, reasons, stats)

    def classify_case(self, stack: np.ndarray, affine: np.ndarray) -> ClassResult:
        """Classify a (4, x, y, z) four-sequence case with its affine, checking it looks like a brain."""
        model = self.stores["3d"].get()
        image = prepare_case_3d(stack, affine, ClassPreprocess.from_meta(model.meta))
        reasons, stats = check_case_3d(stack, affine)
        return self.predict(image, "3d", model, reasons, stats)


def build_classifier(
    shipped_dir: Path, device: torch.device, reduced_precision: bool, published_dir: Path | None = None
) -> Classifier:
    """A Classifier serving ``published_dir``'s weights when present, else ``shipped_dir``'s."""
    published_dir = published_dir or shipped_dir

    def store(kind: str, name: str) -> ModelStore:
        """The warm store of one input kind's weights."""
        # channels-last only for 3D: ModelStore converts to channels_last_3d, which 2D weights cannot take
        last = kind == "3d" and reduced_precision and device.type == "cpu"
        return ModelStore("classification", published_dir / name, shipped_dir / name, device, last,
                          store_expectations(kind))  # fmt: skip

    return Classifier(store("2d", WEIGHTS_2D), store("3d", WEIGHTS_3D), reduced_precision)
