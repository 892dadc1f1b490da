"""MONAI Label infer task: tumour type (glioma, meningioma, pituitary, no tumour).

A 2D image (PNG/JPEG or 2D NIfTI) goes to the 2D model; a 3D NIfTI/NRRD is treated as a
case's FLAIR and its other sequences are found from the datastore layout. There is no
label image: the answer is JSON params (Slicer has no classification selector), and the
prediction is also stored in the datastore's image info for later review.

Every answer carries ``best_guess`` and ``confidence`` (level, reasons, scores); a
low-confidence answer reports ``tumor_type: "uncertain"``. A 3D answer is also checked
against the segmentation of the same case (``inference/consistency.py``; ``consistency``
in the params): a recent segmentation of the case is reused, otherwise one is run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from monailabel.interfaces.tasks.infer_v2 import InferTask

from ..config import AppConfig
from ..imageio import load_sequences
from ..inference.classifier import Classifier, ClassResult
from ..inference.consistency import CaseLesions, not_applied
from ..labels import SEQUENCES, TUMOR_CLASSES
from ..layout import resolve_case, split_image_name
from ..networks.store import ModelUnavailable
from ..transforms.classify_preprocess import input_kind_of
from .errors import checked_image_path, client_errors

logger = logging.getLogger(__name__)


class BrainTumorClassInfer(InferTask):
    """Tumour type from a 2D slice or a four-sequence 3D case, as class probabilities."""

    def __init__(
        self,
        cfg: AppConfig,
        classifier: Classifier,
        datastore_getter: Callable[[], Any] | None = None,
        admission: Any | None = None,
        lesions: CaseLesions | None = None,
    ) -> None:
        super().__init__(
            type="classification",
            labels=list(TUMOR_CLASSES),
            # 3: Slicer and the datastore serve this app's cases as 3D volumes; 2D images are
            # accepted too, the input kind is detected per request and reported in the result.
            dimension=3,
            description="Tumour type (glioma, meningioma, pituitary, no tumour) from a 2D MRI slice or a "
            "four-sequence 3D case, with a confidence level and its reasons; 'uncertain' when unsure; "
            "result in JSON params",
            config={"classes": list(TUMOR_CLASSES), "sequences": list(SEQUENCES)},
        )
        self.cfg = cfg
        self.classifier = classifier
        self.datastore_getter = datastore_getter
        self.admission = admission
        self.lesions = lesions
        self._record_lock = threading.Lock()  # datastore info writes rewrite one JSON file

    def is_valid(self) -> bool:
        """Serve the task when weights for at least one input kind exist."""
        return self.classifier.available()

    def classify(self, image: str | Path) -> ClassResult:
        """Classify a datastore image or upload, choosing the 2D or 3D model by its content."""
        path = Path(image)
        if input_kind_of(path) == "2d":
            return self.classifier.classify_image(path)
        case = resolve_case(path)
        stack, affine, _ = load_sequences(case.sequences, allow_missing=False, max_voxels=self.cfg.max_voxels)
        result = self.classifier.classify_case(stack, affine)
        if self.lesions is None:
            return not_applied(result, "no segmentation model is served")
        try:
            summary, source = self.lesions.for_case(case.sequences, stack, affine)
        except ModelUnavailable:
            return not_applied(result, "the segmentation model is unavailable")
        return self.lesions.answer(result, summary, source)

    def _slot(self) -> contextlib.AbstractContextManager[None]:
        return self.admission.slot("classification") if self.admission is not None else contextlib.nullcontext()

    def __call__(self, request: dict[str, Any]) -> tuple[None, dict[str, Any]]:
        with client_errors("classification"), self._slot():
            result = self.classify(checked_image_path(request.get("image"), self.cfg.studies))
        params = result.as_params()
        self._record(request, params)
        logger.info("classified %s as %s (best guess %s, confidence %s; %s model %s)", request["image"],
                    result.tumor_type, result.best_guess, result.confidence.level, result.input_kind,
                    result.model_version)  # fmt: skip
        return None, params

    def image_id(self, request: dict[str, Any]) -> str | None:
        """The datastore id: the request's ``image_id``, else the file stem when it lies in the studies folder."""
        if request.get("image_id"):
            return str(request["image_id"])
        path = Path(str(request["image"])).resolve()
        if path.parent == Path(self.cfg.studies).resolve():
            return split_image_name(path)[0]
        return None

    def _record(self, request: dict[str, Any], params: dict[str, Any]) -> None:
        """Store the prediction in the datastore image info; failure to record is logged, not fatal."""
        image_id = self.image_id(request)
        if image_id is None or self.datastore_getter is None:
            return
        try:
            info = {"classification": {**params, "ts": int(time.time())}}
            with self._record_lock:
                self.datastore_getter().update_image_info(image_id, info)
        except Exception:  # the answer matters more than the bookkeeping
            logger.warning("could not record the classification of %s in the datastore", image_id, exc_info=True)
