"""Tumour-type classification of a 2D image or a four-sequence 3D case.

Each input kind has its own warm model (``ModelStore``); the preprocessing settings come
from that model's sidecar, so a retrained model with another input size still meets
matching inputs. Used by the infer task, the ``classify`` command and evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..labels import TUMOR_CLASSES
from ..layout import CLASS_WEIGHTS
from ..networks.checkpoint import LoadedModel
from ..networks.store import ModelStore
from ..runtime import autocast
from ..transforms.classify_preprocess import ClassPreprocess, prepare_case_3d, prepare_image_file

logger = logging.getLogger(__name__)

WEIGHTS_2D = CLASS_WEIGHTS["2d"]
WEIGHTS_3D = CLASS_WEIGHTS["3d"]


@dataclass(frozen=True)
class ClassResult:
    """Predicted tumour type, softmax probabilities per class, and provenance."""

    tumor_type: str
    probabilities: dict[str, float]
    model_version: str
    input_kind: str  # "2d" | "3d"

    def as_params(self) -> dict[str, Any]:
        """JSON-ready dict (also lists the classes in output order)."""
        return {**asdict(self), "classes": list(self.probabilities)}


def store_expectations(input_kind: str) -> dict[str, Any]:
    """Sidecar keys a classification model store must match for ``input_kind``."""
    return {"input_kind": input_kind, "classes": list(TUMOR_CLASSES)}


class Classifier:
    """Runs the served 2D and 3D classification models; thread-safe, eval mode only."""

    def __init__(self, store_2d: ModelStore, store_3d: ModelStore, reduced_precision: bool) -> None:
        self.stores = {"2d": store_2d, "3d": store_3d}
        self.reduced = reduced_precision

    def uses_reduced(self, input_kind: str) -> bool:
        """Whether to autocast ``input_kind``: 3D as configured, 2D only on a GPU (see below)."""
        # On this CPU the small 2D DenseNet ran slower in bf16 than in fp32 (35 vs 24 ms per slice).
        return self.reduced and (input_kind == "3d" or self.stores[input_kind].device.type == "cuda")

    def available(self, input_kind: str | None = None) -> bool:
        """Whether weights exist for ``input_kind`` (or for any kind when None)."""
        kinds = [input_kind] if input_kind else list(self.stores)
        return any(self.stores[k].available() for k in kinds)

    @torch.inference_mode()
    def predict(self, image: torch.Tensor, input_kind: str, model: LoadedModel | None = None) -> ClassResult:
        """Classify one preprocessed image (C, *spatial) with ``model`` (default: the served one)."""
        store = self.stores[input_kind]
        model = model or store.get()
        x = image[None].to(store.device)
        if store.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(store.device, self.uses_reduced(input_kind)):
            logits = model.network(x)
        probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.float64)
        classes = [str(c) for c in model.meta.get("classes", TUMOR_CLASSES)]
        probabilities = {c: float(p) for c, p in zip(classes, probs)}
        best = classes[int(np.argmax(probs))]
        return ClassResult(best, probabilities, model.version, input_kind)

    def classify_image(self, path: str | Path) -> ClassResult:
        """Classify a 2D image file (PNG/JPEG or 2D NIfTI/NRRD)."""
        model = self.stores["2d"].get()  # one model for spec and forward, even across a reload
        image = prepare_image_file(path, ClassPreprocess.from_meta(model.meta))
        return self.predict(image, "2d", model)

    def classify_case(self, stack: np.ndarray, affine: np.ndarray) -> ClassResult:
        """Classify a (4, x, y, z) four-sequence case with its affine."""
        model = self.stores["3d"].get()
        image = prepare_case_3d(stack, affine, ClassPreprocess.from_meta(model.meta))
        return self.predict(image, "3d", model)


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
