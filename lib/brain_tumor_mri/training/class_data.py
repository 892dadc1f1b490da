"""Classification training data: which datastore cases are labelled, and their split groups.

A sample is a 2D image (``kind: 2d``) or a 3D case (``kind: 3d``) whose ``case.json``
names a ``tumor_type``. Images cut from the same patient must never straddle the
train/validation split, so each carries a group (``group_of``). The cache entries the
training reads are built in ``class_entries``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..imageio import InputError, load_sequences
from ..labels import TUMOR_CLASSES
from ..layout import image_path, list_cases, read_case_meta, resolve_case
from ..transforms.classify_preprocess import ClassPreprocess, prepare_case_3d, prepare_image_file

logger = logging.getLogger(__name__)

_SLICE_SUFFIX = re.compile(r"[_-]\d+$")


def group_of(case_id: str, meta: dict[str, Any]) -> str:
    """Split group: ``source_case`` from case.json, else the id without a ``_<n>`` slice suffix."""
    source = meta.get("source_case")
    if source:
        return str(source)
    return _SLICE_SUFFIX.sub("", case_id) or case_id


def labelled_cases(studies: str | Path, input_kind: str) -> list[tuple[str, int, str]]:
    """(case id, class index, group) of every case of ``input_kind`` with a known tumour type."""
    out, skipped = [], 0
    for case_id in list_cases(studies, kind=input_kind):
        meta = read_case_meta(studies, case_id)
        tumor_type = meta.get("tumor_type")
        if tumor_type not in TUMOR_CLASSES:
            skipped += 1
            continue
        out.append((case_id, TUMOR_CLASSES.index(tumor_type), group_of(case_id, meta)))
    if skipped:
        logger.info("%d %s case(s) without a known tumour type left out", skipped, input_kind)
    return out


def load_image(studies: str | Path, case_id: str, spec: ClassPreprocess, max_voxels: int | None = None) -> torch.Tensor:
    """Preprocessed network input of one datastore case, exactly as inference prepares it."""
    path = image_path(studies, case_id)
    if path is None:
        raise InputError(f"{case_id}: no image in the datastore")
    if spec.input_kind == "2d":
        return prepare_image_file(path, spec)
    stack, affine, _ = load_sequences(resolve_case(path).sequences, allow_missing=False, max_voxels=max_voxels)
    return prepare_case_3d(stack, affine, spec)
