"""Files an inference answer can be: NIfTI, NRRD / Slicer ``.seg.nrrd``, or a DICOM SEG.

The infer task asks for one with the request's ``result_extension``. NRRD answers carry
Slicer's segment names, colours and terminology (``imageio_seg``); a ``.dcm`` answer is a
DICOM SEG on the case's FLAIR series, possible only for cases that came from a PACS (their
DICOM headers are kept in the cache), marked as the model's automatic result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .imageio import InputError, save_label
from .labels import DISPLAY_SEQUENCE
from .layout import CASES_DIR, CaseFiles

#: ``result_extension`` values answered; anything else gets ``DEFAULT_EXTENSION``.
ANSWER_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".dcm")
DEFAULT_EXTENSION = ".nii.gz"
DICOM_SEG_EXTENSION = ".dcm"


def answer_extension(requested: object) -> str:
    """The extension to answer with for a request's ``result_extension``."""
    ext = str(requested or DEFAULT_EXTENSION)
    return ext if ext in ANSWER_EXTENSIONS else DEFAULT_EXTENSION


def _case_folder(case: CaseFiles) -> Path | None:
    flair = case.sequences.get(DISPLAY_SEQUENCE)
    return Path(flair).parent / CASES_DIR / case.case_id if flair is not None else None


def check_answer_possible(ext: str, case: CaseFiles) -> None:
    """Refuse a DICOM SEG answer for a case without DICOM source headers (before inference)."""
    if ext != DICOM_SEG_EXTENSION:
        return
    from .dicom.cache import read_source_headers

    folder = _case_folder(case)
    if folder is None or not read_source_headers(folder):
        raise InputError(f"{case.case_id}: a DICOM SEG answer needs a case from a PACS (--studies http(s)://...)")


def write_label_answer(
    path: str | Path, label: np.ndarray, affine: np.ndarray, case: CaseFiles, model_version: str
) -> Path:
    """Write the answer file for ``label``; removes the file again if writing fails."""
    path = Path(path)
    try:
        if path.name.endswith(DICOM_SEG_EXTENSION):
            from .dicom.cache import read_source_headers
            from .dicom.derived import derived_objects
            from .dicom.seg import Provenance

            folder = _case_folder(case)
            source = read_source_headers(folder) if folder is not None else []
            objects = derived_objects(
                source, label, affine, Provenance(model_version, corrected=False), name=case.case_id, report=False
            )
            objects.seg.save_as(str(path), write_like_original=False)
            return path
        return save_label(path, label, affine)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
