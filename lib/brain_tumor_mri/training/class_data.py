"""Classification training data: labelled datastore cases, preprocessed once, split by group.

A sample is a 2D image (``kind: 2d``) or a 3D case (``kind: 3d``) whose ``case.json``
names a ``tumor_type``. Images cut from the same patient must never straddle the
train/validation split, so splitting works on groups (``group_of``), stratified by class.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..imageio import InputError, load_sequences
from ..labels import TUMOR_CLASSES
from ..layout import image_path, list_cases, read_case_meta, resolve_case
from ..transforms.classify_preprocess import ClassPreprocess, prepare_case_3d, prepare_image_file

logger = logging.getLogger(__name__)

_SLICE_SUFFIX = re.compile(r"[_-]\d+$")


@dataclass(frozen=True)
class ClassSample:
    """One preprocessed training image with its class index and split group."""

    case_id: str
    label: int
    group: str
    image: torch.Tensor


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


def load_samples(studies: str | Path, spec: ClassPreprocess) -> list[ClassSample]:
    """All labelled samples of the spec's input kind; unreadable cases are logged and skipped."""
    samples = []
    for case_id, label, group in labelled_cases(studies, spec.input_kind):
        try:
            samples.append(ClassSample(case_id, label, group, load_image(studies, case_id, spec)))
        except InputError as exc:
            logger.warning("skipping %s: %s", case_id, exc)
    logger.info("%d %s samples: %s", len(samples), spec.input_kind, describe(samples))
    return samples


def split_by_group(
    samples: list[ClassSample], val_fraction: float, seed: int
) -> tuple[list[ClassSample], list[ClassSample]]:
    """Seeded train/validation split of whole groups, stratified by each group's majority class."""
    by_group: dict[str, list[ClassSample]] = defaultdict(list)
    for s in samples:
        by_group[s.group].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        by_class[Counter(m.label for m in members).most_common(1)[0][0]].append(group)
    rng = random.Random(seed)
    val_groups: set[str] = set()
    for label in sorted(by_class):
        groups = by_class[label]
        rng.shuffle(groups)
        n_val = int(round(val_fraction * len(groups)))
        if val_fraction > 0 and len(groups) >= 2:
            n_val = min(max(n_val, 1), len(groups) - 1)
        val_groups.update(groups[:n_val])
    train = [s for s in samples if s.group not in val_groups]
    val = [s for s in samples if s.group in val_groups]
    return train, val


def describe(samples: list[ClassSample]) -> dict[str, int]:
    """Sample count per class name (for logs and the sidecar)."""
    counts = Counter(TUMOR_CLASSES[s.label] for s in samples)
    return {c: counts.get(c, 0) for c in TUMOR_CLASSES}
