"""The segmentation training set: labelled 3D cases of a datastore, preprocessed once.

Every case with a final label and ``kind == "3d"`` is loaded with the same readers and the
same ``prepare_case`` the server uses at inference, so training never sees data prepared
differently from what the served model will get. At 2 mm a case is a few MB of tensors,
so the whole set stays in memory and epochs only pay for augmentation and the network.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import layout
from ..imageio import InputError, load_sequences, load_volume
from ..labels import convert_labels
from ..transforms.preprocess import prepare_case

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegCase:
    """One preprocessed training case: image (4, x, y, z) float32, label (x, y, z) uint8."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    missing: tuple[str, ...] = field(default=())


def labelled_case_ids(studies: str | Path) -> list[str]:
    """Ids of the datastore's 3D cases that have a final label, sorted."""
    return [cid for cid in layout.list_cases(studies, kind="3d") if layout.final_label_path(studies, cid) is not None]


def load_case(studies: str | Path, case_id: str, spacing: float, allow_missing: bool = False) -> SegCase:
    """Read, check and preprocess one labelled case; errors name the case."""
    image_path = layout.image_path(studies, case_id)
    label_path = layout.final_label_path(studies, case_id)
    if image_path is None or label_path is None:
        raise InputError(f"case {case_id}: image or final label not found in {studies}")
    files = layout.resolve_case(image_path)
    try:
        stack, affine, missing = load_sequences(files.sequences, allow_missing=allow_missing)
        label_raw, label_affine = load_volume(label_path)
    except InputError as exc:
        raise InputError(f"case {case_id}: {exc}") from exc
    if label_raw.shape != stack.shape[1:]:
        raise InputError(f"case {case_id}: label shape {label_raw.shape} differs from image shape {stack.shape[1:]}")
    label = convert_labels(label_raw, "internal", source=f"case {case_id} label {label_path.name}")
    prepared = prepare_case(stack, affine, spacing, label)
    assert prepared.label is not None
    return SegCase(case_id, prepared.image.contiguous(), prepared.label.contiguous(), tuple(missing))


def load_cases(
    studies: str | Path, spacing: float, case_ids: list[str] | None = None, allow_missing: bool = False
) -> list[SegCase]:
    """Load and preprocess ``case_ids`` (default: every labelled 3D case)."""
    ids = labelled_case_ids(studies) if case_ids is None else list(case_ids)
    cases = []
    for i, cid in enumerate(ids, 1):
        cases.append(load_case(studies, cid, spacing, allow_missing))
        logger.debug("loaded case %s (%d/%d) window %s", cid, i, len(ids), tuple(cases[-1].image.shape[1:]))
    logger.info("loaded %d labelled cases from %s at %.1f mm", len(cases), studies, spacing)
    return cases


def split_ids(case_ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by case; >= 1 validation case when >= 2 cases."""
    ids = sorted(case_ids)
    if len(ids) < 2 or val_fraction <= 0:
        return ids, []
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    val = sorted(shuffled[:n_val])
    return [i for i in ids if i not in val], val


def describe(studies: str | Path, train: list[SegCase], val: list[SegCase], spacing: float) -> dict[str, Any]:
    """A JSON-able description of the training data for the weights sidecar and the log."""
    shapes = [tuple(c.image.shape[1:]) for c in train + val]
    return {
        "studies": str(Path(studies).resolve()),
        "spacing_mm": spacing,
        "train_cases": [c.case_id for c in train],
        "val_cases": [c.case_id for c in val],
        "max_window": [max(s[a] for s in shapes) for a in range(3)] if shapes else [],
        "cases_with_missing_sequences": sum(1 for c in train + val if c.missing),
    }


def load_split(
    studies: str | Path, spacing: float, val_fraction: float, seed: int, allow_missing: bool = False
) -> tuple[list[SegCase], list[SegCase], dict[str, Any]]:
    """Everything a training run needs from a datastore: train cases, val cases, description."""
    ids = labelled_case_ids(studies)
    if not ids:
        raise InputError(f"{studies}: no 3D cases with a final label (labels/final/<id>.nii.gz)")
    train_ids, val_ids = split_ids(ids, val_fraction, seed)
    cases = {c.case_id: c for c in load_cases(studies, spacing, ids, allow_missing)}
    train = [cases[i] for i in train_ids]
    val = [cases[i] for i in val_ids]
    return train, val, describe(studies, train, val, spacing)
