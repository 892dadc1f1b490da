"""What a training run trains on: a list of case specs (ids, source files, targets, groups).

A ``CaseSpec`` names a case's files and, for classification, its class and split group;
nothing is read until the cache builds the case (``training.cache``). Specs come from a
datastore (``segmentation_cases``, ``classification_cases``) and may be mixed from two
sources: the datastore being trained on (``primary``) and a ``replay`` datastore whose
cases are drawn at a fixed fraction (e.g. the original training set while fine-tuning on
a site's cases). Splits are by case (segmentation) or by patient group (classification).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from .. import layout
from ..imageio import InputError
from ..labels import SEQUENCES, TUMOR_CLASSES
from .class_data import labelled_cases

logger = logging.getLogger(__name__)

PRIMARY = "primary"
REPLAY = "replay"


@dataclass(frozen=True)
class CaseSpec:
    """One training case: its files by role, and (classification) its class and split group.

    Roles are the sequence keys (``t1n`` ...), ``label`` (segmentation ground truth) and
    ``image`` (a 2D picture). ``origin`` is the datastore the files belong to, so equal
    case ids of two datastores never share a cache entry.
    """

    case_id: str
    files: tuple[tuple[str, str], ...]
    origin: str
    target: int | None = None
    group: str = ""
    source: str = PRIMARY

    def file(self, role: str) -> Path | None:
        """The file of ``role``, or None."""
        return next((Path(p) for r, p in self.files if r == role), None)

    @property
    def sequences(self) -> dict[str, Path]:
        """The case's sequence files by key (``SEQUENCES`` order, missing ones left out)."""
        found = dict(self.files)
        return {k: Path(found[k]) for k in SEQUENCES if k in found}

    @property
    def origin_tag(self) -> str:
        """A short stable tag of ``origin`` for cache file names."""
        return hashlib.sha1(self.origin.encode("utf-8")).hexdigest()[:8]


def _sequence_files(studies: Path, case_id: str) -> list[tuple[str, str]]:
    """(key, path) of a 3D case's sequences as the server resolves them."""
    image = layout.image_path(studies, case_id)
    if image is None:
        raise InputError(f"case {case_id}: image not found in {studies}")
    return [(k, str(p)) for k, p in layout.resolve_case(image).sequences.items()]


def segmentation_cases(studies: str | Path, source: str = PRIMARY) -> list[CaseSpec]:
    """Every 3D case of ``studies`` with a final label, sorted by id."""
    root = Path(studies).resolve()
    specs = []
    for cid in layout.list_cases(root, kind="3d"):
        label = layout.final_label_path(root, cid)
        if label is None:
            continue
        files = tuple(_sequence_files(root, cid) + [("label", str(label))])
        specs.append(CaseSpec(cid, files, str(root), group=cid, source=source))
    return specs


def classification_cases(studies: str | Path, input_kind: str, source: str = PRIMARY) -> list[CaseSpec]:
    """Every ``input_kind`` case of ``studies`` with a known tumour type (``case.json``)."""
    root = Path(studies).resolve()
    specs = []
    for cid, target, group in labelled_cases(root, input_kind):
        if input_kind == "2d":
            image = layout.image_path(root, cid)
            if image is None:
                logger.warning("skipping %s: no image in the datastore", cid)
                continue
            files: tuple[tuple[str, str], ...] = (("image", str(image)),)
        else:
            files = tuple(_sequence_files(root, cid))
        specs.append(CaseSpec(cid, files, str(root), target=target, group=group, source=source))
    return specs


def split_ids(case_ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by case; >= 1 validation case when >= 2 cases."""
    ids = sorted(case_ids)
    if len(ids) < 2 or val_fraction <= 0:
        return ids, []
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    val = set(shuffled[:n_val])
    return [i for i in ids if i not in val], sorted(val)


def split_by_group(specs: list[CaseSpec], val_fraction: float, seed: int) -> tuple[list[CaseSpec], list[CaseSpec]]:
    """Seeded train/validation split of whole groups, stratified by each group's majority class.

    Images cut from one patient share a group and never straddle the split. Without
    targets (segmentation) every case is its own group of one class, which reduces to a
    seeded split by case.
    """
    by_group: dict[str, list[CaseSpec]] = defaultdict(list)
    for s in specs:
        by_group[s.group or s.case_id].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        by_class[Counter(m.target or 0 for m in members).most_common(1)[0][0]].append(group)
    rng = random.Random(seed)
    val_groups: set[str] = set()
    for label in sorted(by_class):
        groups = by_class[label]
        rng.shuffle(groups)
        n_val = int(round(val_fraction * len(groups)))
        if val_fraction > 0 and len(groups) >= 2:
            n_val = min(max(n_val, 1), len(groups) - 1)
        val_groups.update(groups[:n_val])
    train = [s for s in specs if (s.group or s.case_id) not in val_groups]
    val = [s for s in specs if (s.group or s.case_id) in val_groups]
    return train, val


def split_segmentation(specs: list[CaseSpec], val_fraction: float, seed: int) -> tuple[list[CaseSpec], list[CaseSpec]]:
    """Train/validation split of segmentation cases by case id (``split_ids``)."""
    by_id = {s.case_id: s for s in specs}
    train_ids, val_ids = split_ids(list(by_id), val_fraction, seed)
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]


def class_counts(specs: list[CaseSpec]) -> dict[str, int]:
    """Number of cases per class name (for logs and the sidecar)."""
    counts = Counter(TUMOR_CLASSES[s.target] for s in specs if s.target is not None)
    return {c: counts.get(c, 0) for c in TUMOR_CLASSES}
