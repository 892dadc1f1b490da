"""How a case lives in a MONAI Label local datastore (the studies folder).

::

    studies/
      <id>.nii.gz                  3D case: its FLAIR, the volume Slicer shows and labels
      <id>.png                     2D image (classification only)
      labels/final/<id>.nii.gz     segmentation, internal label values 0..3
      cases/<id>/case.json         {"kind": "3d"|"2d", "tumor_type": ..., "source": ...}
      cases/<id>/t1n.nii.gz        the other sequences of a 3D case, same geometry as FLAIR
      cases/<id>/t1c.nii.gz
      cases/<id>/t2w.nii.gz

MONAI Label's local datastore lists only files at the top level of ``studies``, so Slicer
sees one scalar volume per case and saves its corrected label against the case id, while
the server finds the remaining sequences from that id.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .labels import DISPLAY_SEQUENCE, SEQUENCES

logger = logging.getLogger(__name__)

CASES_DIR = "cases"
CASE_META = "case.json"
#: Folder (inside the studies folder) that training publishes fine-tuned models into.
MODEL_DIR = "model"
#: Weights file names, the same in ``model_weights/`` (shipped) and ``studies/model/`` (published).
SEG_WEIGHTS = "segmentation.pt"
CLASS_WEIGHTS: dict[str, str] = {"2d": "classification_2d.pt", "3d": "classification_3d.pt"}
LESION_TYPE_WEIGHTS = "lesion_type.json"  # 3D tumour type from the segmentation (inference/lesion_type.py)
IMAGE_EXTS_3D = (".nii.gz", ".nii", ".nrrd")
IMAGE_EXTS_2D = (".png", ".jpg", ".jpeg")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_case_id(case_id: str) -> str:
    """Reject ids that could escape the studies folder (``../``, slashes, empty)."""
    if not case_id or not _ID_RE.match(case_id) or ".." in case_id:
        raise ValueError(f"invalid case id {case_id!r}: use letters, digits, '.', '_' and '-' only")
    return case_id


def split_image_name(path: str | Path) -> tuple[str, str]:
    """``/x/BraTS-001.nii.gz`` -> ``("BraTS-001", ".nii.gz")``."""
    name = Path(path).name
    for ext in IMAGE_EXTS_3D + IMAGE_EXTS_2D:
        if name.lower().endswith(ext):
            return name[: -len(ext)], ext
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot else (name, "")


@dataclass(frozen=True)
class CaseFiles:
    """Paths of one case's sequences (by internal key) and its metadata."""

    case_id: str
    sequences: dict[str, Path]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [s for s in SEQUENCES if s not in self.sequences]


def case_dir(studies: str | Path, case_id: str) -> Path:
    return Path(studies) / CASES_DIR / validate_case_id(case_id)


def read_case_meta(studies: str | Path, case_id: str) -> dict[str, Any]:
    path = case_dir(studies, case_id) / CASE_META
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)


def resolve_case(image_path: str | Path) -> CaseFiles:
    """Find all sequences of the case whose datastore image is ``image_path``.

    The image itself is the display sequence (FLAIR); the others are looked up under
    ``cases/<id>/`` beside it. An image outside any datastore (e.g. an upload) resolves
    to a single-sequence case and the caller decides whether that is acceptable.
    """
    image_path = Path(image_path)
    case_id, _ = split_image_name(image_path)
    sequences: dict[str, Path] = {DISPLAY_SEQUENCE: image_path}
    meta: dict[str, Any] = {}
    folder = image_path.parent / CASES_DIR / case_id
    if _ID_RE.match(case_id) and folder.is_dir():
        for key in SEQUENCES:
            if key == DISPLAY_SEQUENCE:
                continue
            for ext in IMAGE_EXTS_3D:
                candidate = folder / f"{key}{ext}"
                if candidate.is_file():
                    sequences[key] = candidate
                    break
        meta_path = folder / CASE_META
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return CaseFiles(case_id=case_id, sequences=sequences, meta=meta)


def list_cases(studies: str | Path, kind: str | None = None) -> list[str]:
    """Ids of the datastore's cases that have a ``case.json`` (optionally of one kind)."""
    root = Path(studies) / CASES_DIR
    if not root.is_dir():
        return []
    ids = []
    for d in sorted(root.iterdir()):
        meta_path = d / CASE_META
        if not meta_path.is_file():
            continue
        if kind is None or json.loads(meta_path.read_text(encoding="utf-8")).get("kind") == kind:
            ids.append(d.name)
    return ids


def image_path(studies: str | Path, case_id: str) -> Path | None:
    """The datastore image of ``case_id`` (3D FLAIR or 2D picture), or None."""
    for ext in IMAGE_EXTS_3D + IMAGE_EXTS_2D:
        p = Path(studies) / f"{validate_case_id(case_id)}{ext}"
        if p.is_file():
            return p
    return None


def published_dir(studies: str | Path) -> Path:
    """Where training publishes models for this datastore; they serve before the shipped ones."""
    return Path(studies) / MODEL_DIR


def final_label_dir(studies: str | Path) -> Path:
    """The folder MONAI Label keeps final (ground-truth or corrected) labels in."""
    return Path(studies) / "labels" / "final"


#: Label tag for ground truth withheld from annotators (kept for evaluation only).
REFERENCE_TAG = "reference"


def reference_label_dir(studies: str | Path) -> Path:
    """Where imported ground truth that should not count as annotated is kept."""
    return Path(studies) / "labels" / REFERENCE_TAG


def final_label_path(studies: str | Path, case_id: str) -> Path | None:
    folder = final_label_dir(studies)
    for ext in IMAGE_EXTS_3D:
        p = folder / f"{validate_case_id(case_id)}{ext}"
        if p.is_file():
            return p
    return None


def atomic_write_json(
    path: str | Path, data: Any, *, indent: int = 2, sort_keys: bool = True, default: Callable[[Any], Any] | None = None
) -> None:
    """Write JSON via a temporary file, fsync and rename, so readers never see half a file.

    The one writer of the project's small JSON state (case meta, sidecars, train results,
    label records, the lesion-type model); ``default`` converts values JSON cannot hold.
    The temporary name carries the process id, so two processes never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fp:
            json.dump(data, fp, indent=indent, sort_keys=sort_keys, default=default)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
