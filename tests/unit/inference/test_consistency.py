"""The segmentation/classification consistency rule: lesion components, the rule table, the lesion book."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.inference.classifier import ClassResult, answer_for
from brain_tumor_mri.inference.confidence import ConfidencePolicy, assess
from brain_tumor_mri.inference.consistency import (
    CaseLesions,
    ConsistencyRule,
    LesionCache,
    apply_consistency,
    case_key,
    lesion_summary,
)
from brain_tumor_mri.inference.input_checks import Reason
from brain_tumor_mri.inference.segmenter import Segmentation, Segmenter, store_expectations
from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.networks.store import ModelStore
from tests.helpers.consistency import lesion_case, save_threshold_segmenter, write_case

AFFINE_2MM = np.diag([2.0, 2.0, 2.0, 1.0])  # one voxel = 0.008 mL


def _label_with(blobs: list[tuple[tuple[int, int, int], int, int]], shape=(40, 40, 40)) -> np.ndarray:
    """Label with cubes (corner, side, value)."""
    label = np.zeros(shape, np.uint8)
    for (x, y, z), side, value in blobs:
        label[x : x + side, y : y + side, z : z + side] = value
    return label


def test_lesion_summary_counts_components_and_ignores_specks():
    label = _label_with([((2, 2, 2), 5, 2), ((20, 20, 20), 5, 2), ((30, 2, 2), 2, 2)])  # 1 mL, 1 mL, 0.064 mL
    label[22:24, 22:24, 22:24] = 3  # enhancing core inside the second lesion
    s = lesion_summary(label, AFFINE_2MM, min_lesion_ml=0.5, segmentation="v1")
    assert s.count == 2 and s.small_components == 1 and s.segmentation == "v1"
    assert s.whole_tumor_ml == pytest.approx(2.064)
    vols = sorted((les.volume_ml, les.enhancing_ml, les.core_ml) for les in s.lesions)
    assert vols == [pytest.approx((1.0, 0.0, 0.0)), pytest.approx((1.0, 0.064, 0.064))]
    centres = sorted(les.centroid_ras_mm for les in s.lesions)
    assert centres[0] == pytest.approx((8.0, 8.0, 8.0))  # voxel 4 x 2 mm
    params = s.as_params()
    assert params["count"] == 2 and len(params["lesions"]) == 2 and params["ignored_small_components"] == 1


def test_diagonal_contact_joins_lesions_and_empty_label_has_none():
    label = _label_with([((2, 2, 2), 5, 2), ((7, 7, 7), 5, 2)])  # cubes touch at one corner
    assert lesion_summary(label, AFFINE_2MM, 0.5).count == 1
    empty = lesion_summary(np.zeros((10, 10, 10), np.uint8), AFFINE_2MM, 0.5)
    assert empty.count == 0 and empty.whole_tumor_ml == 0.0 and empty.lesions == ()


def _answer(best: str, p: float = 0.9, input_reasons: tuple[Reason, ...] = ()) -> ClassResult:
    """A ClassResult whose best guess is ``best`` with probability ``p``."""
    probs = np.full(len(TUMOR_CLASSES), (1 - p) / (len(TUMOR_CLASSES) - 1))
    probs[TUMOR_CLASSES.index(best)] = p
    logits = np.log(probs)
    conf = assess(probs, logits, ConfidencePolicy(), list(input_reasons))
    return ClassResult(answer_for(best, conf), dict(zip(TUMOR_CLASSES, probs.tolist())), "v", "3d", best, conf,
                       tuple(logits.tolist()))  # fmt: skip


NONE: list = []
ONE_SMALL = [((2, 2, 2), 4, 2)]  # 0.512 mL: one lesion, below the 1 mL tumour threshold
ONE = [((2, 2, 2), 6, 2)]  # 1.728 mL
TWO = [((2, 2, 2), 6, 2), ((25, 25, 25), 6, 2)]
SPECKS = [((2, 2, 2), 2, 2), ((25, 25, 25), 2, 2)]  # two 0.064 mL specks: no lesion
BIG_AND_SMALL = [((2, 2, 2), 12, 2), ((25, 25, 25), 6, 2)]  # 13.8 and 1.7 mL: the second is 12.5 % of the first


@pytest.mark.parametrize(
    ("best", "blobs", "answer", "codes"),
    [
        ("no_tumor", NONE, "no_tumor", []),
        ("no_tumor", ONE_SMALL, "no_tumor", []),
        ("no_tumor", ONE, "uncertain", ["consistency.tumour_found"]),
        ("no_tumor", TWO, "other", ["consistency.multiple_lesions", "consistency.tumour_found"]),
        ("glioma", ONE, "glioma", []),
        ("meningioma", TWO, "other", ["consistency.multiple_lesions"]),
        ("pituitary", NONE, "uncertain", ["consistency.no_lesion"]),
        ("glioma", SPECKS, "uncertain", ["consistency.no_lesion"]),
        ("glioma", BIG_AND_SMALL, "glioma", []),  # a far smaller second component: not a metastasis pattern
    ],
)
def test_rule_table(best, blobs, answer, codes):
    lesions = lesion_summary(_label_with(blobs), AFFINE_2MM, ConsistencyRule().min_lesion_ml, "seg-v")
    result = apply_consistency(_answer(best), lesions, ConsistencyRule(), "test")
    assert result.tumor_type == answer
    assert [r.code for r in result.confidence.reasons] == codes
    assert result.confidence.level == ("low" if codes else "high")
    assert result.best_guess == best and result.probabilities == _answer(best).probabilities
    c = result.as_params()["consistency"]
    assert c["applied"] and c["consistent"] == (not codes) and c["reasons"] == codes
    assert c["lesion_count"] == lesions.count and c["segmentation"] == "seg-v" and c["rule"]["min_tumour_ml"] == 1.0


def test_named_type_needs_a_lesion_the_user_is_shown_but_no_tumor_still_sees_every_lesion():
    """Rule (c) reads the post-processed label, (a) and (b) the network's whole output."""
    whole = _label_with(TWO)
    shown = _label_with(ONE)  # post-processing removed the second lesion
    seg = Segmentation(shown, np.zeros((3, *shown.shape), np.float32), {}, "seg-v", network_label=whole)
    book = CaseLesions(lambda: None)  # type: ignore[arg-type,return-value]
    summary, listed = book.of_segmentation(seg, AFFINE_2MM)
    assert summary.count == 2 and summary.shown_count == 1 and listed.count == 1
    assert apply_consistency(_answer("glioma"), summary).tumor_type == "other"  # (b) on the whole output
    seg = Segmentation(_label_with(NONE), seg.probs, {}, "seg-v", network_label=_label_with(ONE))
    summary, listed = book.of_segmentation(seg, AFFINE_2MM)
    assert summary.count == 1 and summary.shown_count == 0 and listed.count == 0
    typed = apply_consistency(_answer("pituitary"), summary)  # the user sees no lesion: the type is not confirmed
    assert typed.tumor_type == "uncertain" and [r.code for r in typed.confidence.reasons] == ["consistency.no_lesion"]
    assert typed.consistency["shown_lesion_count"] == 0 and typed.consistency["lesion_count"] == 1
    free = apply_consistency(_answer("no_tumor"), summary)  # the removed lesion still blocks a confident no_tumor
    assert free.tumor_type == "uncertain" and [r.code for r in free.confidence.reasons] == ["consistency.tumour_found"]
    same = Segmentation(_label_with(ONE), seg.probs, {}, "seg-v")  # nothing removed: one summary for both
    summary, listed = book.of_segmentation(same, AFFINE_2MM)
    assert summary is listed and summary.shown_lesions is None and summary.shown_count == 1


def test_rule_keeps_earlier_reasons_and_thresholds_are_configurable():
    earlier = _answer("glioma", input_reasons=(Reason("input.colour", "colour"),))
    one = lesion_summary(_label_with(ONE), AFFINE_2MM, 0.5)
    result = apply_consistency(earlier, one)
    assert result.tumor_type == "uncertain" and [r.code for r in result.confidence.reasons] == ["input.colour"]
    strict = ConsistencyRule(min_tumour_ml=0.4)
    small = lesion_summary(_label_with(ONE_SMALL), AFFINE_2MM, strict.min_lesion_ml)
    assert apply_consistency(_answer("no_tumor"), small, strict).tumor_type == "uncertain"
    assert apply_consistency(_answer("no_tumor", p=0.4), lesion_summary(_label_with(NONE), AFFINE_2MM)).tumor_type == (
        "uncertain"
    )  # low probability alone already makes it uncertain


def test_cache_is_lru_and_keys_change_with_content(tmp_path):
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"x")
    key = case_key({"t2f": f}, "v1")
    assert key == case_key({"t2f": f}, "v1") and key != case_key({"t2f": f}, "v2")
    os.utime(f, ns=(1, 1))
    assert case_key({"t2f": f}, "v1") != key
    cache = LesionCache(size=2)
    s = lesion_summary(np.zeros((4, 4, 4), np.uint8), AFFINE_2MM)
    for k in ("a", "b"):
        cache.put((k, (), "v"), s)
    assert cache.get(("a", (), "v")) is s  # "a" becomes the most recent
    cache.put(("c", (), "v"), s)
    assert cache.get(("b", (), "v")) is None and cache.get(("a", (), "v")) is s


class CountingSegmenter(Segmenter):
    """A real Segmenter that counts its passes."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls = 0

    def segment(self, stack, affine):
        self.calls += 1
        return super().segment(stack, affine)


def test_case_lesions_reuse_a_recent_segmentation(tmp_path: Path):
    weights = save_threshold_segmenter(tmp_path / "w" / "segmentation.pt")
    store = ModelStore("segmentation", tmp_path / "none.pt", weights, torch.device("cpu"), False, store_expectations())
    segmenter = CountingSegmenter(store, 2.0, False)
    stack, affine, _ = lesion_case([(-40, 20, 10), (40, -30, 0)])
    flair = write_case(tmp_path / "studies", "mets", stack, affine, "metastasis")
    files = {
        "t2f": flair,
        **{k: tmp_path / "studies" / "cases" / "mets" / f"{k}.nii.gz" for k in ("t1n", "t1c", "t2w")},
    }
    book = CaseLesions(lambda: segmenter)
    first, source = book.for_case(files, stack, affine)
    assert first.count == 2 and source == "segmentation run for this answer" and segmenter.calls == 1
    again, source = book.for_case(files, stack, affine)
    assert again is first and source == "recent segmentation of this case" and segmenter.calls == 1
    os.utime(flair, ns=(5, 5))  # the case changed on disk: segment again
    book.for_case(files, stack, affine)
    assert segmenter.calls == 2


def test_the_rule_sees_lesions_that_post_processing_removed(tmp_path: Path):
    """A filter that removes every component empties the label, not the 3D answer's lesion count."""
    import json

    from brain_tumor_mri.networks.checkpoint import sidecar_path

    weights = save_threshold_segmenter(tmp_path / "w" / "segmentation.pt", gain=0.05)  # probabilities well below 1
    meta = json.loads(sidecar_path(weights).read_text())
    meta["postprocess"] = {"min_mean_prob": {"whole_tumor": 0.999}}  # nothing is sure enough
    sidecar_path(weights).write_text(json.dumps(meta))
    store = ModelStore("segmentation", tmp_path / "none.pt", weights, torch.device("cpu"), False, store_expectations())
    segmenter = Segmenter(store, 2.0, False)
    stack, affine, _ = lesion_case([(-40, 20, 10), (40, -30, 0)])
    seg = segmenter.segment(stack, affine)
    assert not seg.label.any() and len(seg.candidates) == 2
    assert seg.unfiltered.any() and seg.network_label is not None
    flair = write_case(tmp_path / "studies", "mets", stack, affine, "metastasis")
    files = {"t2f": flair, **{k: flair.parent / "cases" / "mets" / f"{k}.nii.gz" for k in ("t1n", "t1c", "t2w")}}
    summary, _ = CaseLesions(lambda: segmenter).for_case(files, stack, affine)
    assert summary.count == 2
    checked = apply_consistency(_answer("no_tumor", 0.95), summary)
    assert checked.tumor_type == "other" and checked.confidence.level == "low"
