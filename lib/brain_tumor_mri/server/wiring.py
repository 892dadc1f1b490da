"""Builds the app's MONAI Label tasks from one ``AppConfig``; ``apps/brain_tumor/main.py`` calls this.

Kept in the library (not the app folder) so tests can build the same tasks in-process and
the app stays a thin MONAI Label adapter with no logic of its own. Every task of one
server process shares one ``ServerContext``: the warm models, the admission books and the
reservation book of the next-sample strategies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..activelearning.pool import Reservations
from ..config import AppConfig
from ..inference.served import ServedModels
from .admission import Admission

logger = logging.getLogger(__name__)

#: Models that can be trained from the datastore (each has a train task).
TRAINABLE = ("segmentation", "classification")
TRAIN_DESCRIPTIONS = {
    "segmentation": "Fine-tune the 3D U-Net on the datastore's final labels",
    "classification": "Fine-tune the tumour-type classifiers on the datastore's class labels",
}


@dataclass
class ServerContext:
    """What the tasks of one server process share."""

    cfg: AppConfig
    models: ServedModels
    reservations: Reservations = field(default_factory=Reservations)
    #: names of what the app serves, by kind ("model", "trainer", "strategy", "scoring"), for the API's checks
    served: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _admission: dict[str, Admission] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: AppConfig) -> ServerContext:
        """A context for ``cfg``; nothing heavy is loaded until a task needs it."""
        return cls(cfg, ServedModels(cfg))

    def admission(self, task: str) -> Admission:
        """One admission book per task, so quick classifications do not queue behind segmentations."""
        if task not in self._admission:
            self._admission[task] = Admission(self.cfg.infer_concurrency, self.cfg.max_queue)
        return self._admission[task]


def build_datastore(cfg: AppConfig) -> Any:
    """The local datastore with validated, atomic label writes (over a PACS cache for a DICOMweb URL)."""
    from monailabel.config import settings

    from .datastore import BrainTumorDatastore

    kwargs = {
        "extensions": settings.MONAI_LABEL_DATASTORE_FILE_EXT,
        "auto_reload": settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
        "read_only": settings.MONAI_LABEL_DATASTORE_READ_ONLY,
    }
    if cfg.pacs_url:
        from .dicomweb_datastore import build_pacs_datastore

        datastore = build_pacs_datastore(cfg, **kwargs)
    else:
        datastore = BrainTumorDatastore(str(cfg.studies), **kwargs)
    datastore.max_voxels = cfg.max_voxels
    return datastore


def clean_interrupted_saves(cfg: AppConfig) -> int:
    """Remove the partial label files a killed save left behind; how many.

    Only the serving process may call this, at start (``server_mode``): MONAI Label's training
    and scoring subprocesses build the app (and its datastore) again on the same folder while
    the server keeps saving labels, and a clean-up there deleted a save in flight (a 500 seen
    under the soak load).
    """
    from .datastore import clean_partial_files

    removed = clean_partial_files(cfg.studies)
    if removed:
        logger.warning("removed %d partial label file(s) left by an interrupted save", removed)
    return removed


def build_infers(ctx: ServerContext, datastore_getter: Callable[[], Any]) -> dict[str, Any]:
    """The infer tasks enabled by ``cfg.models``."""
    cfg, models = ctx.cfg, ctx.models
    infers: dict[str, Any] = {}
    lesions = None
    if "segmentation" in cfg.models:
        from ..inference.consistency import CaseLesions
        from .infer_segmentation import BrainTumorSegInfer

        seg_admission = ctx.admission("segmentation")
        # one lesion book: a classification reuses the segmentation just made of the same case
        classifier = models.classifier if "classification" in cfg.models else None
        lesion_type = models.lesion_type().get if classifier is not None else None
        lesions = CaseLesions(
            models.segmenter, slot=lambda: seg_admission.slot("segmentation"), lesion_type=lesion_type
        )
        infers["segmentation"] = BrainTumorSegInfer(cfg, models.segmenter(), seg_admission, classifier, lesions)
    if "classification" in cfg.models:
        from .infer_classification import BrainTumorClassInfer

        infers["classification"] = BrainTumorClassInfer(
            cfg, models.classifier(), datastore_getter, ctx.admission("classification"), lesions
        )
    ctx.served["model"] = tuple(infers)
    return infers


def build_trainers(ctx: ServerContext) -> dict[str, Any]:
    """Train tasks for the enabled models."""
    from .train_task import ModelTrainTask

    trainers = {m: ModelTrainTask(ctx.cfg, m, TRAIN_DESCRIPTIONS[m]) for m in ctx.cfg.models if m in TRAINABLE}
    ctx.served["trainer"] = tuple(trainers)
    return trainers


def build_strategies(ctx: ServerContext) -> dict[str, Any]:
    """Next-sample strategies; all share one reservation book."""
    from .strategies import First, Random

    cfg, book = ctx.cfg, ctx.reservations
    strategies: dict[str, Any] = {"random": Random(cfg.studies, book, cfg.seed), "first": First(cfg.studies, book)}
    if "segmentation" in cfg.models:
        from .scoring import served_version
        from .strategies import DiverseStrategy, UncertaintyStrategy

        def version() -> str | None:
            return served_version(ctx.models.seg_store())

        for method in ("epistemic", "tta"):
            strategies[method] = UncertaintyStrategy(cfg.studies, book, method, version)
        strategies["diverse"] = DiverseStrategy(cfg.studies, book, "epistemic", version, cfg.al_clusters, cfg.seed)
    ctx.served["strategy"] = tuple(strategies)
    return strategies


def build_scoring(ctx: ServerContext) -> dict[str, Any]:
    """Scoring methods that store per-case uncertainty in the datastore (lazy: no model load)."""
    ctx.served["scoring"] = ()
    if "segmentation" not in ctx.cfg.models:
        return {}
    from .scoring import EpistemicScoring, TTAScoring

    segmenter = ctx.models.segmenter
    methods = {"epistemic": EpistemicScoring(ctx.cfg, segmenter), "tta": TTAScoring(ctx.cfg, segmenter)}
    ctx.served["scoring"] = tuple(methods)
    return methods
