"""The models a datastore is served with, created lazily and kept warm, one set per process.

Used by the MONAI Label app (``server.wiring``), the ``segment`` and ``classify`` commands
and the benchmark, so all of them load the same weights the same way: the datastore's
published fine-tuned model when there is one (``studies/model/``), else the shipped one
(``AppConfig.weights_dir``), with the device and precision chosen once from the config.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..config import AppConfig
from ..layout import published_dir
from ..networks.store import ModelStore
from ..runtime import pick_device, use_reduced_precision
from .classifier import Classifier, build_classifier
from .lesion_type import LesionTypeStore, lesion_type_store
from .segmenter import Segmenter, segmentation_store

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServedModels:
    """Lazily built, shared model stores and pipelines for one ``AppConfig``."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()  # makers call _get for what they build on

    def _get(self, key: str, make: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    @property
    def device(self) -> torch.device:
        """Where networks run (``cfg.device``; auto picks CUDA when present)."""
        return self._get("device", lambda: pick_device(self.cfg.device))

    @property
    def reduced(self) -> bool:
        """Whether inference autocasts (fp16 on GPU, bf16 on CPUs with native support)."""
        return use_reduced_precision(self.device, self.cfg.bf16)

    def seg_store(self) -> ModelStore:
        """The warm segmentation model store (published weights first, then shipped)."""
        return self._get(
            "seg_store", lambda: segmentation_store(self.cfg.studies, self.cfg.weights_dir, self.device, self.reduced)
        )

    def segmenter(self) -> Segmenter:
        """The segmentation pipeline on the served model."""
        return self._get(
            "segmenter",
            lambda: Segmenter(self.seg_store(), self.cfg.seg_spacing, self.reduced, self.cfg.infer_memory_mb),
        )

    def classifier(self) -> Classifier:
        """The 2D and 3D tumour-type classifiers on the served models."""
        return self._get(
            "classifier",
            lambda: build_classifier(self.cfg.weights_dir, self.device, self.reduced, published_dir(self.cfg.studies)),
        )

    def lesion_type(self) -> LesionTypeStore:
        """The lesion-feature tumour-type model (published first, then shipped; re-read when it changes)."""
        return self._get("lesion_type", lambda: lesion_type_store(self.cfg.studies, self.cfg.weights_dir))
