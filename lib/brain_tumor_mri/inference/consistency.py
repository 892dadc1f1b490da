"""Consistency between the segmentation and the 3D classification of the same case.

(``CaseLesions`` also supplies the lesion features from which a served lesion-type model
answers the 3D tumour type, ``lesion_type.py``; the rule below applies to that answer too.)

The two models answer separately and can contradict each other (the classifier saying
``no_tumor`` at 0.81 while the segmentation outlines a lesion). The segmentation's whole
tumour (WT = labels 1-3) is split into lesions: connected components (26-connectivity) of at
least ``min_lesion_ml``; smaller specks are counted but ignored. Then, for a 3D answer:

(a) ``consistency.tumour_found``: WT >= ``min_tumour_ml`` and the classifier's best guess is
    ``no_tumor`` -> ``uncertain`` (``no_tumor`` is never reported with confidence).
(b) ``consistency.multiple_lesions``: >= ``min_lesions_other`` separate lesions, each at least
    ``min_lesion_share`` of the largest -> ``other``: several separate lesions (metastasis-like)
    are not one of glioma / meningioma / pituitary, so no class is forced. A component far
    smaller than the main tumour is more often a false positive of the segmentation or a
    satellite than a second metastasis; the share (0.15) was chosen on the segmentation's own
    training cases, where it kept all 44 metastasis cases ``other`` and cut the in-class tumours
    answered ``other`` from 32 to 19 of 117.
(c) ``consistency.no_lesion``: no lesion of ``min_lesion_ml`` in the label the user is shown
    while the classifier names a tumour type -> ``uncertain`` (the two models disagree).

(a) and (b) read the network's whole output, (c) the post-processed label the user gets
(``LesionSummary.shown_lesions``): each rule reads the view that makes it flag more, so a
lesion post-processing removed still blocks a confident ``no_tumor``, and a type is confirmed
only by a lesion the user can see. Measured on tumour-free held-out brains, the whole output
often keeps a small false positive that post-processing removes and the lesion-type model
reads as a tumour; (c) on the whole output let those answers through as confident.

Each adds a reason to the answer's confidence and makes it ``low``; the probabilities stay.
Separate lesions whose edema merges count as one lesion, and a single metastasis is not
recognised as such: the rule catches the clear multi-lesion pattern, nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..imageio import nonzero_mask
from ..labels import REGIONS
from .classifier import ClassResult, answer_for
from .input_checks import Reason
from .lesion_features import lesion_features
from .lesion_type import LesionTypeModel, lesion_type_answer
from .measure import voxel_volume_ml

if TYPE_CHECKING:
    from .segmenter import Segmentation, Segmenter

logger = logging.getLogger(__name__)

NO_TUMOR = "no_tumor"
#: Lesions listed one by one in the params (the count covers all).
MAX_LISTED = 20


@dataclass(frozen=True)
class ConsistencyRule:
    """The documented thresholds of the rule (module docstring)."""

    min_tumour_ml: float = 1.0
    min_lesion_ml: float = 0.5
    min_lesions_other: int = 2
    min_lesion_share: float = 0.15  # of the largest lesion, for a lesion to count in (b)

    def as_params(self) -> dict[str, Any]:
        return {"min_tumour_ml": self.min_tumour_ml, "min_lesion_ml": self.min_lesion_ml,
                "min_lesions_other": self.min_lesions_other, "min_lesion_share": self.min_lesion_share}  # fmt: skip


@dataclass(frozen=True)
class Lesion:
    """One connected component of the whole tumour."""

    volume_ml: float
    core_ml: float  # necrotic core + enhancing (BraTS tumour core)
    enhancing_ml: float
    centroid_ras_mm: tuple[float, float, float]

    def as_params(self) -> dict[str, Any]:
        return {"volume_ml": self.volume_ml, "core_ml": self.core_ml, "enhancing_ml": self.enhancing_ml,
                "centroid_ras_mm": list(self.centroid_ras_mm)}  # fmt: skip


@dataclass(frozen=True)
class LesionSummary:
    """Lesions of one segmentation, largest first, and where the segmentation came from."""

    whole_tumor_ml: float
    lesions: tuple[Lesion, ...]
    small_components: int  # components below min_lesion_ml, not counted as lesions
    min_lesion_ml: float
    segmentation: str = ""  # e.g. the segmentation model version
    features: tuple[float, ...] | None = None  # lesion_features.FEATURE_NAMES, when a lesion-type model is served
    shown_lesions: int | None = None  # lesions in the post-processed label the user gets; None: the same label

    @property
    def count(self) -> int:
        return len(self.lesions)

    @property
    def shown_count(self) -> int:
        """Lesions of at least ``min_lesion_ml`` in the label the user is shown."""
        return self.count if self.shown_lesions is None else self.shown_lesions

    def as_params(self) -> dict[str, Any]:
        """Segmentation params: count, per-lesion volumes (largest first, at most ``MAX_LISTED``)."""
        return {
            "count": self.count,
            "min_lesion_ml": self.min_lesion_ml,
            "ignored_small_components": self.small_components,
            "whole_tumor_ml": self.whole_tumor_ml,
            "lesions": [les.as_params() for les in self.lesions[:MAX_LISTED]],
        }


def lesion_summary(
    label: np.ndarray, affine: np.ndarray, min_lesion_ml: float = ConsistencyRule.min_lesion_ml, segmentation: str = ""
) -> LesionSummary:
    """Connected components of the whole tumour of an internal-convention label (x, y, z).

    Works on the tumour's bounding box and on tumour voxels only, so its cost follows the
    tumour's size, not the volume's (a few ms for a BraTS-sized label).
    """
    label = np.asarray(label)
    vox_ml = voxel_volume_ml(affine)
    wt_full = np.isin(label, REGIONS["whole_tumor"])
    box = ndimage.find_objects(wt_full.astype(np.uint8))
    if not box or box[0] is None:
        return LesionSummary(0.0, (), 0, min_lesion_ml, segmentation)
    origin = np.array([sl.start for sl in box[0]], dtype=np.float64)
    crop, wt = label[box[0]], wt_full[box[0]]
    parts, n = ndimage.label(wt, structure=np.ones((3, 3, 3), dtype=bool))
    idx = np.nonzero(wt)
    ids = parts[idx]
    sizes = np.bincount(ids, minlength=n + 1)
    core = np.bincount(ids, weights=np.isin(crop[idx], REGIONS["tumor_core"]), minlength=n + 1)
    enh = np.bincount(ids, weights=np.isin(crop[idx], REGIONS["enhancing_tumor"]), minlength=n + 1)
    centre = [np.bincount(ids, weights=idx[a], minlength=n + 1) / np.maximum(sizes, 1) + origin[a] for a in range(3)]
    lesions = []
    for k in range(1, n + 1):
        if sizes[k] * vox_ml < min_lesion_ml:
            continue
        ras = np.asarray(affine, dtype=np.float64) @ np.array([centre[0][k], centre[1][k], centre[2][k], 1.0])
        lesions.append(Lesion(round(float(sizes[k]) * vox_ml, 3), round(float(core[k]) * vox_ml, 3),
                              round(float(enh[k]) * vox_ml, 3),
                              (round(float(ras[0]), 1), round(float(ras[1]), 1), round(float(ras[2]), 1))))  # fmt: skip
    lesions.sort(key=lambda les: -les.volume_ml)
    total = round(float(sizes[1:].sum()) * vox_ml, 3)
    return LesionSummary(total, tuple(lesions), n - len(lesions), min_lesion_ml, segmentation)


def consistency_reasons(best_guess: str, lesions: LesionSummary, rule: ConsistencyRule) -> tuple[list[Reason], bool]:
    """The rule's reasons for an answer whose best guess is ``best_guess``, and whether it is ``other``."""
    reasons = []
    largest = lesions.lesions[0].volume_ml if lesions.lesions else 0.0
    comparable = [les for les in lesions.lesions if les.volume_ml >= rule.min_lesion_share * largest]
    other = len(comparable) >= rule.min_lesions_other
    if other:
        sizes = ", ".join(f"{les.volume_ml:.1f}" for les in comparable[:5])
        reasons.append(Reason("consistency.multiple_lesions", f"multiple lesions (metastasis-like pattern): not one "
                              f"of glioma/meningioma/pituitary; the segmentation finds {len(comparable)} separate "
                              f"lesions of comparable size ({sizes} mL)"))  # fmt: skip
    if best_guess == NO_TUMOR and lesions.whole_tumor_ml >= rule.min_tumour_ml:
        reasons.append(Reason("consistency.tumour_found", f"the segmentation finds {lesions.whole_tumor_ml:.1f} mL "
                              f"of tumour (>= {rule.min_tumour_ml:g} mL), so 'no_tumor' is not reported"))  # fmt: skip
    if best_guess != NO_TUMOR and lesions.shown_count == 0:
        reasons.append(Reason("consistency.no_lesion", f"the segmentation finds no lesion of at least "
                              f"{rule.min_lesion_ml:g} mL, so '{best_guess}' is not confirmed"))  # fmt: skip
    return reasons, other


def apply_consistency(
    result: ClassResult, lesions: LesionSummary, rule: ConsistencyRule | None = None, source: str = ""
) -> ClassResult:
    """``result`` checked against the segmentation's ``lesions`` (module docstring for the rule)."""
    rule = rule or ConsistencyRule()
    reasons, other = consistency_reasons(result.best_guess, lesions, rule)
    confidence = result.confidence.with_reasons(reasons)
    record = {
        "applied": True,
        "consistent": not reasons,
        "reasons": [r.code for r in reasons],
        "lesion_count": lesions.count,
        "shown_lesion_count": lesions.shown_count,
        "whole_tumor_ml": lesions.whole_tumor_ml,
        "segmentation": lesions.segmentation,
        "source": source,
        "rule": rule.as_params(),
    }
    return replace(result, tumor_type=answer_for(result.best_guess, confidence, other), confidence=confidence,
                   consistency=record)  # fmt: skip


def not_applied(result: ClassResult, why: str) -> ClassResult:
    """``result`` marked as not cross-checked (e.g. no segmentation model served), saying why."""
    return replace(result, consistency={"applied": False, "why": why})


CacheKey = tuple[str, tuple[tuple[str, int, int], ...], str]


def case_key(files: dict[str, Path], segmentation_version: str) -> CacheKey:
    """Identity of one case's content and the segmentation model: paths, sizes, mtimes, version."""
    stamps = []
    for key in sorted(files):
        st = Path(files[key]).stat()
        stamps.append((str(Path(files[key]).resolve()), int(st.st_size), int(st.st_mtime_ns)))
    return (str(sorted(files)), tuple(stamps), segmentation_version)


class LesionCache:
    """Recent lesion summaries by ``case_key``, so a classification can reuse a fresh segmentation.

    Thread-safe, least-recently-used, ``size`` entries (a summary is a few hundred bytes).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, LesionSummary] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> LesionSummary | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: CacheKey, summary: LesionSummary) -> None:
        with self._lock:
            self._items[key] = summary
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class CaseLesions:
    """Lesion summaries of 3D cases for the 3D answer: a recent one, else a new segmentation.

    The segmentation answer ``remember``s its summary; a classification of the same case
    files with the same segmentation model reuses it (``source`` "recent segmentation"),
    otherwise it runs the served segmentation once (``source`` "segmentation run for this
    answer": one full segmentation pass, the cost of the rule on a cache miss), inside
    ``slot`` so it queues with the segmentation requests instead of overloading the server.
    With a served ``lesion_type`` model the summary also carries the lesion features and
    ``answer`` takes the tumour type from them (``lesion_type.py``) before the rule.
    """

    def __init__(
        self,
        segmenter: Callable[[], Segmenter],
        rule: ConsistencyRule | None = None,
        cache: LesionCache | None = None,
        slot: Callable[[], AbstractContextManager[Any]] | None = None,
        lesion_type: Callable[[], LesionTypeModel | None] | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.rule = rule or ConsistencyRule()
        self.cache = cache or LesionCache()
        self.slot = slot or contextlib.nullcontext
        self.lesion_type = lesion_type or (lambda: None)

    def summarise(
        self, label: np.ndarray, affine: np.ndarray, segmentation: str, stack: np.ndarray | None = None
    ) -> LesionSummary:
        """The summary of a segmentation label, with lesion features when ``stack`` is given and a model served."""
        summary = lesion_summary(label, affine, self.rule.min_lesion_ml, segmentation)
        if stack is None or self.lesion_type() is None:
            return summary
        feats = lesion_features(label, nonzero_mask(stack), affine)
        return replace(summary, features=tuple(float(v) for v in feats))

    def of_segmentation(
        self, seg: Segmentation, affine: np.ndarray, stack: np.ndarray | None = None
    ) -> tuple[LesionSummary, LesionSummary]:
        """(summary for the 3D answer, summary of the label the user gets) of one segmentation.

        The first reads the network's whole output (``Segmentation.unfiltered``; the lesion
        features too) and carries the shown label's lesion count for rule (c); the second is
        the same object when post-processing removed nothing.
        """
        summary = self.summarise(seg.unfiltered, affine, seg.model_version, stack)
        if seg.network_label is None:
            return summary, summary
        shown = lesion_summary(seg.label, affine, self.rule.min_lesion_ml, seg.model_version)
        return replace(summary, shown_lesions=shown.count), shown

    def remember(self, files: dict[str, Path], summary: LesionSummary) -> None:
        """Keep the summary of a segmentation just made of the case ``files``."""
        self.cache.put(case_key(files, summary.segmentation), summary)

    def for_case(self, files: dict[str, Path], stack: np.ndarray, affine: np.ndarray) -> tuple[LesionSummary, str]:
        """(summary, where it came from) for the case ``files`` whose loaded data is ``stack``."""
        segmenter = self.segmenter()
        key = case_key(files, segmenter.store.get().version)
        cached = self.cache.get(key)
        if cached is not None and (cached.features is not None or self.lesion_type() is None):
            return cached, "recent segmentation of this case"
        with self.slot():
            seg = segmenter.segment(stack, affine)
        summary, _ = self.of_segmentation(seg, affine, stack)
        self.cache.put(case_key(files, seg.model_version), summary)
        return summary, "segmentation run for this answer"

    def answer(self, result: ClassResult, summary: LesionSummary, source: str) -> ClassResult:
        """The 3D answer: from the lesion features when a lesion-type model is served, then the rule."""
        model = self.lesion_type()
        if model is not None and summary.features is not None:
            result = lesion_type_answer(model, np.asarray(summary.features), result, summary.segmentation)
        return apply_consistency(result, summary, self.rule, source)
