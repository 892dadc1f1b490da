"""MONAI Label infer task: four-sequence brain-tumour segmentation for 3D Slicer.

Slicer sends the case id of the FLAIR it shows; the task finds the other sequences from
that id (see ``layout``), segments, and answers with a uint8 label of values 1..3 on the
FLAIR's exact grid plus JSON params: label names, volumes in mL, centroid, model version,
``low_confidence_candidates`` (components the weights' fitted post-processing left out of
the label, with volume, mean probability and RAS centroid, so nothing is dropped unseen),
``lesions`` (separate lesions with their volumes) and, when classification is served, the
3D ``classification`` checked against this segmentation (``inference/consistency.py``).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, Callable

from monailabel.interfaces.tasks.infer_v2 import InferTask

from ..answers import answer_extension, check_answer_possible, write_label_answer
from ..config import AppConfig
from ..imageio import InputError, load_sequences
from ..inference.classifier import Classifier
from ..inference.consistency import CaseLesions, LesionSummary
from ..inference.segmenter import Segmenter
from ..labels import SEG_LABELS, SEQUENCES
from ..layout import IMAGE_EXTS_2D, resolve_case
from .admission import Admission
from .errors import checked_image_path, client_errors

logger = logging.getLogger(__name__)


class BrainTumorSegInfer(InferTask):
    """Necrotic core (1), edema (2) and enhancing tumour (3) from T1, T1c, T2 and FLAIR."""

    def __init__(
        self,
        cfg: AppConfig,
        segmenter: Segmenter,
        admission: Admission,
        classifier: Callable[[], Classifier] | None = None,
        lesions: CaseLesions | None = None,
    ) -> None:
        super().__init__(
            type="segmentation",
            labels=dict(SEG_LABELS),
            dimension=3,
            description="3D U-Net on four co-registered MRI sequences (T1, T1c, T2, FLAIR): "
            "necrotic core, edema, enhancing tumour, with volumes",
            # Slicer sends each config key back with the first value as default: .seg.nrrd answers
            # carry segment names, colours and codes (imageio_seg); .dcm is a DICOM SEG (PACS cases)
            config={
                "sequences": list(SEQUENCES),
                "spacing_mm": cfg.seg_spacing,
                "result_extension": [".seg.nrrd", ".nrrd", ".nii.gz", ".dcm"],
            },
        )
        self.cfg = cfg
        self.segmenter = segmenter
        self.admission = admission
        self.classifier = classifier
        self.lesions = lesions or CaseLesions(lambda: segmenter)

    def is_valid(self) -> bool:
        return self.segmenter.store.available()

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ext = answer_extension(request.get("result_extension"))
        with client_errors("segmentation"), self.admission.slot("segmentation"):
            path = checked_image_path(request.get("image"), self.cfg.studies)
            if path.name.lower().endswith(IMAGE_EXTS_2D):
                raise InputError(f"{path.name} is a 2D image; segmentation needs a 3D case with four sequences")
            case = resolve_case(path)
            check_answer_possible(ext, case)
            stack, affine, missing = load_sequences(
                case.sequences, allow_missing=self.cfg.allow_missing_sequences, max_voxels=self.cfg.max_voxels
            )
            seg = self.segmenter.segment(stack, affine)
            params: dict[str, Any] = {
                "label_names": dict(SEG_LABELS),
                "model_version": seg.model_version,
                "case_id": case.case_id,
                "missing_sequences": missing,
                **seg.measurements,
                "low_confidence_candidates": seg.candidates,
            }
            # the 3D type reads the network's whole output, the listed lesions are those of the label the
            # user gets (``CaseLesions.of_segmentation``; the consistency module says which rule reads which)
            summary, shown = self.lesions.of_segmentation(seg, affine, stack)
            self.lesions.remember(case.sequences, summary)
            params["lesions"] = shown.as_params()
            params["classification"] = self.classification(stack, affine, summary)
            out = tempfile.NamedTemporaryFile(suffix=ext, delete=False).name
            write_label_answer(out, seg.label, affine, case, seg.model_version)
        logger.info(
            "segmented %s: WT %.1f mL (model %s)", case.case_id, params["volumes_ml"]["whole_tumor"], seg.model_version
        )
        return out, params

    def classification(self, stack: Any, affine: Any, summary: LesionSummary) -> dict[str, Any] | None:
        """The 3D tumour type checked against this segmentation, or None when no 3D classifier is served."""
        if self.classifier is None:
            return None
        clf = self.classifier()
        if not clf.available("3d"):
            return None
        result = clf.classify_case(stack, affine)
        return self.lesions.answer(result, summary, "this segmentation").as_params()
