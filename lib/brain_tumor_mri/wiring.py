"""Builds the app's tasks from one ``AppConfig``; ``apps/brain_tumor/main.py`` calls this.

Kept in the library (not the app folder) so tests and the CLI can build the same tasks,
and so the app stays a thin MONAI Label adapter with no logic of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import AppConfig
from .networks.store import ModelStore
from .runtime import pick_device, use_reduced_precision

logger = logging.getLogger(__name__)

SEG_WEIGHTS = "segmentation.pt"


def published_dir(cfg: AppConfig) -> Path:
    """Where training publishes models for this datastore (beside its studies)."""
    return cfg.studies / "model"


@dataclass
class Runtime:
    """Shared, lazily created heavy objects (networks), one per server process."""

    cfg: AppConfig
    _cache: dict[str, Any] = field(default_factory=dict)

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def device(self):
        return self._get("device", lambda: pick_device(self.cfg.device))

    @property
    def reduced(self) -> bool:
        return use_reduced_precision(self.device, self.cfg.bf16)

    def seg_store(self) -> ModelStore:
        return self._get(
            "seg_store",
            lambda: ModelStore(
                "segmentation",
                published_dir(self.cfg) / SEG_WEIGHTS,
                self.cfg.weights_dir / SEG_WEIGHTS,
                self.device,
                channels_last=self.reduced and self.device.type == "cpu",
            ),
        )

    def segmenter(self):
        from .inference.segmenter import Segmenter

        return self._get("segmenter", lambda: Segmenter(self.seg_store(), self.cfg.seg_spacing, self.reduced))

    def classifier(self):
        from .inference.classifier import build_classifier

        return self._get(
            "classifier",
            lambda: build_classifier(self.cfg.weights_dir, self.device, self.reduced, published_dir(self.cfg)),
        )

    def admission(self, task: str = "segmentation"):
        """One admission book per task, so quick classifications do not queue behind segmentations."""
        from .infers.admission import Admission

        return self._get(f"admission_{task}", lambda: Admission(self.cfg.infer_concurrency, self.cfg.max_queue))


def build_datastore(cfg: AppConfig):
    """The local datastore with validated, atomic label writes."""
    from monailabel.config import settings

    from .datastore import BrainTumorDatastore, clean_partial_files

    removed = clean_partial_files(cfg.studies)
    if removed:
        logger.warning("removed %d partial label file(s) left by an interrupted save", removed)
    datastore = BrainTumorDatastore(
        str(cfg.studies),
        extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
        auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
        read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
    )
    datastore.max_voxels = cfg.max_voxels
    return datastore


def build_infers(rt: Runtime, datastore_getter: Callable[[], Any]) -> dict[str, Any]:
    """The infer tasks enabled by ``cfg.models``."""
    infers: dict[str, Any] = {}
    if "segmentation" in rt.cfg.models:
        from .infers.segmentation import BrainTumorSegInfer

        classify = None
        if "classification" in rt.cfg.models:

            def classify(stack, affine):  # the segmentation answer also carries the tumour type
                clf = rt.classifier()
                return clf.classify_case(stack, affine).as_params() if clf.available("3d") else None

        infers["segmentation"] = BrainTumorSegInfer(rt.cfg, rt.segmenter(), rt.admission(), classify)
    if "classification" in rt.cfg.models:
        from .infers.classification import BrainTumorClassInfer

        infers["classification"] = BrainTumorClassInfer(
            rt.cfg, rt.classifier(), datastore_getter, rt.admission("classification")
        )
    return infers


def build_trainers(rt: Runtime) -> dict[str, Any]:
    """Train tasks for the enabled models (each runs ``brain-tumor train <model>``)."""
    from .commands.train import TARGETS
    from .trainers.train_task import ModelTrainTask

    descriptions = {
        "segmentation": "Fine-tune the 3D U-Net on the datastore's final labels",
        "classification": "Fine-tune the tumour-type classifiers on the datastore's class labels",
    }
    return {m: ModelTrainTask(rt.cfg, m, descriptions[m]) for m in rt.cfg.models if m in TARGETS}


def build_strategies(rt: Runtime) -> dict[str, Any]:
    """Next-sample strategies; all share one reservation book."""
    from .activelearning.pool import Reservations
    from .activelearning.strategies import First, Random

    book = rt._get("reservations", Reservations)
    strategies: dict[str, Any] = {
        "random": Random(rt.cfg.studies, book, rt.cfg.seed),
        "first": First(rt.cfg.studies, book),
    }
    if "segmentation" in rt.cfg.models:
        from .activelearning.scoring import served_version
        from .activelearning.strategies import UncertaintyStrategy

        for method in ("epistemic", "tta"):
            strategies[method] = UncertaintyStrategy(rt.cfg.studies, book, method,
                                                     lambda: served_version(rt.seg_store()))
    return strategies


def build_scoring(rt: Runtime) -> dict[str, Any]:
    """Scoring methods that store per-case uncertainty in the datastore (lazy: no model load)."""
    if "segmentation" not in rt.cfg.models:
        return {}
    from .activelearning.scoring import EpistemicScoring, TTAScoring

    return {"epistemic": EpistemicScoring(rt.cfg, rt.segmenter), "tta": TTAScoring(rt.cfg, rt.segmenter)}
