"""The lesion-feature tumour-type model: features, fitting, the model file, and the 3D answer it gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from brain_tumor_mri.imageio import InputError, nonzero_mask
from brain_tumor_mri.inference.classifier import ClassResult, answer_for
from brain_tumor_mri.inference.confidence import ConfidencePolicy, assess
from brain_tumor_mri.inference.consistency import CaseLesions, lesion_summary
from brain_tumor_mri.inference.input_checks import Reason
from brain_tumor_mri.inference.lesion_features import FEATURE_NAMES, lesion_features
from brain_tumor_mri.inference.lesion_type import (
    LesionTypeModel,
    LesionTypeStore,
    lesion_type_answer,
    load_lesion_type,
    save_lesion_type,
)
from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.training.calibration import nll
from brain_tumor_mri.training.lesion_type_fit import (
    DEFAULT_L2,
    FeatureSet,
    fit_lesion_type,
    fold_assignment,
    out_of_fold_logits,
)

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _brain(shape=(80, 96, 80), spacing=2.0) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal 'brain' filling most of the grid, and its affine (RAS, ``spacing`` mm)."""
    idx = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape) - 1) / 2
    r = sum(((idx[a] - centre[a]) / (0.45 * shape[a])) ** 2 for a in range(3))
    return r < 1, np.diag([spacing, spacing, spacing, 1.0])


def _ball(shape, centre, radius_vox) -> np.ndarray:
    idx = np.indices(shape).astype(np.float64)
    return sum((idx[a] - centre[a]) ** 2 for a in range(3)) < radius_vox**2


def test_superficial_and_deep_lesions_differ_in_depth_and_surface_contact():
    brain, affine = _brain()
    shape = brain.shape
    deep = np.where(_ball(shape, (40, 48, 40), 5), 2, 0).astype(np.uint8)
    shallow = np.where(_ball(shape, (40, 48, 74), 5) & brain, 2, 0).astype(np.uint8)  # at the top edge
    fd, fs = lesion_features(deep, brain, affine), lesion_features(shallow, brain, affine)
    assert fd.shape == (len(FEATURE_NAMES),) and fd.dtype == np.float64
    assert fd[F["depth_mean"]] > 0.7 and fs[F["depth_mean"]] < 0.2
    assert fd[F["surface_frac"]] == 0.0 and fs[F["surface_frac"]] > 0.5
    assert fs[F["rel_is"]] > 1.0 > abs(fd[F["rel_is"]])  # high up vs central
    assert fd[F["edema_frac"]] == 1.0 and fd[F["et_frac_tc"]] == 0.0  # edema only


def test_compartments_count_and_midline_symmetry():
    brain, affine = _brain()
    shape = brain.shape
    label = np.zeros(shape, np.uint8)
    left, right = _ball(shape, (20, 48, 40), 6), _ball(shape, (59, 48, 40), 6)
    label[left | right] = 2
    label[_ball(shape, (20, 48, 40), 3)] = 3  # an enhancing core in one of them
    f = lesion_features(label, brain, affine)
    assert f[F["n_lesions"]] == 2 and f[F["largest_share"]] == pytest.approx(0.5, abs=0.02)
    assert f[F["et_frac_tc"]] == 1.0 and 0.85 < f[F["edema_frac"]] < 1.0
    assert f[F["log_wt"]] == pytest.approx(np.log1p((label > 0).sum() * 0.008))
    mirrored = lesion_features(label[::-1].copy(), brain[::-1].copy(), affine)
    assert mirrored[F["rel_lat"]] == pytest.approx(f[F["rel_lat"]], abs=0.05)  # unsigned distance from the midline


def test_no_tumour_gives_zeros_and_the_grid_does_not_matter():
    brain, affine = _brain()
    assert not lesion_features(np.zeros(brain.shape, np.uint8), brain, affine).any()
    shape = brain.shape
    label = np.where(_ball(shape, (30, 40, 50), 6), 3, 0).astype(np.uint8)
    coarse = lesion_features(label, brain, affine)
    fine = lesion_features(  # the same geometry on a 1 mm grid (nearest-neighbour upsampled)
        label.repeat(2, 0).repeat(2, 1).repeat(2, 2), brain.repeat(2, 0).repeat(2, 1).repeat(2, 2),
        np.diag([1.0, 1.0, 1.0, 1.0]),
    )  # fmt: skip
    assert fine == pytest.approx(coarse, abs=0.03)


def test_the_brain_is_where_any_sequence_has_signal():
    stack = np.zeros((4, 3, 3, 3), np.float32)
    stack[2, 1, 1, 1] = 5.0
    stack[0, 0, 0, 0] = -1.0
    assert nonzero_mask(stack).sum() == 2


def _separable(n_per_class: int = 20, seed: int = 0) -> FeatureSet:
    """Features where each class has its own mean in two features, with noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(len(TUMOR_CLASSES)):
        x = rng.normal(0, 0.5, (n_per_class, len(FEATURE_NAMES)))
        x[:, c] += 3.0
        xs.append(x)
        ys += [c] * n_per_class
    ids = [f"case{i:03d}" for i in range(len(ys))]
    return FeatureSet(np.concatenate(xs), np.asarray(ys), ids, ids)


def test_fit_separates_classes_and_calibrates_on_out_of_fold_answers():
    fs = _separable()
    model = fit_lesion_type(fs, folds=4, seed=1)
    rec = model.record
    assert rec["cases"] == 80 and rec["folds"] == 4
    cv = rec["validation"]
    assert cv["accuracy"] >= 0.9 and rec["train_accuracy"] >= 0.95
    assert cv["nll_after"] <= cv["nll_before"] + 1e-9
    oof = out_of_fold_logits(fs, fold_assignment(fs, 4, seed=1), DEFAULT_L2)
    assert nll(oof, fs.y, model.temperature) == pytest.approx(cv["nll_after"], abs=1e-3)
    assert [rec["cv_predictions"][c] for c in fs.case_ids] == oof.argmax(axis=1).tolist()
    assert cv["accuracy"] == pytest.approx(float((oof.argmax(axis=1) == fs.y).mean()), abs=1e-4)


def test_out_of_fold_answers_come_from_models_that_never_saw_the_case():
    """Moving one case far away changes the models of the other folds, not the one that answers its own fold."""
    fs = _separable(10)
    fold = fold_assignment(fs, 5, seed=0)
    base = out_of_fold_logits(fs, fold, DEFAULT_L2)
    x = fs.x.copy()
    x[0] += 25.0
    moved = out_of_fold_logits(FeatureSet(x, fs.y, fs.case_ids, fs.groups), fold, DEFAULT_L2)
    same_fold = (fold == fold[0]) & (np.arange(len(fs.y)) != 0)
    assert np.allclose(moved[same_fold], base[same_fold])
    assert not np.allclose(moved[fold != fold[0]], base[fold != fold[0]])


def test_folds_keep_groups_together_and_stratify():
    fs = _separable(10)
    groups = [f"patient{i // 2}" for i in range(len(fs.y))]  # two cases per patient
    fs = FeatureSet(fs.x, fs.y, fs.case_ids, groups)
    fold = fold_assignment(fs, 5, seed=3)
    for g in set(groups):
        assert len(set(fold[np.asarray(groups) == g].tolist())) == 1
    for k in range(5):
        assert np.bincount(fs.y[fold == k], minlength=4).tolist() == [2, 2, 2, 2]
    few = FeatureSet(fs.x[:6], fs.y[:6], fs.case_ids[:6], groups[:6])  # three patients: three folds at most
    assert sorted(set(fold_assignment(few, 5, seed=0).tolist())) == [0, 1, 2]


def test_too_few_cases_are_refused():
    fs = _separable(1)
    with pytest.raises(InputError, match="at least 8"):
        fit_lesion_type(fs)
    with pytest.raises(InputError, match="at least 2 folds"):
        fit_lesion_type(_separable(), folds=1)


def test_model_file_round_trip_and_malformed_files(tmp_path: Path):
    model = fit_lesion_type(_separable(), seed=0)
    path = tmp_path / "lesion_type.json"
    save_lesion_type(model, path)
    again = load_lesion_type(path)
    x = _separable(3, seed=9).x
    assert again.version == model.version and np.allclose(again.logits(x), model.logits(x))
    good = json.loads(path.read_text())
    bad_cases = {
        "features": {**good, "features": list(reversed(good["features"]))},
        "shape": {**good, "coef": good["coef"][:2]},
        "nan": {**good, "intercept": [float("nan")] * 4},
        "temperature": {**good, "temperature": 0.0},
        "kind": {**good, "kind": "something else"},
    }
    for name, data in bad_cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        with pytest.raises(ValueError):
            load_lesion_type(tmp_path / f"{name}.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_lesion_type(tmp_path / "garbage.json")


def test_store_prefers_published_reloads_on_change_and_skips_malformed(tmp_path: Path):
    shipped, published = tmp_path / "shipped.json", tmp_path / "model" / "lesion_type.json"
    store = LesionTypeStore(published, shipped)
    assert store.get() is None
    first = fit_lesion_type(_separable(seed=1))
    save_lesion_type(first, shipped)
    assert store.get().version == first.version
    second = LesionTypeModel(first.mean, first.scale, first.coef, first.intercept, 2.0, "published-one")
    save_lesion_type(second, published)
    assert store.get().version == "published-one"
    published.write_text("{broken")
    os.utime(published, ns=(1, 1))  # a new modification time even on coarse clocks
    assert store.get() is None  # malformed: not served (the image classifier answers)


def _image_answer(best: str = "no_tumor", reasons: tuple[Reason, ...] = ()) -> ClassResult:
    probs = np.full(4, 0.1 / 3)
    probs[TUMOR_CLASSES.index(best)] = 0.9
    conf = assess(probs, np.log(probs), ConfidencePolicy(), list(reasons))
    return ClassResult(answer_for(best, conf), dict(zip(TUMOR_CLASSES, probs.tolist())), "cnn-v", "3d", best, conf)


def _model_favouring(cls: str, strength: float = 6.0) -> LesionTypeModel:
    f = len(FEATURE_NAMES)
    intercept = np.zeros(4)
    intercept[TUMOR_CLASSES.index(cls)] = strength
    return LesionTypeModel(np.zeros(f), np.ones(f), np.zeros((4, f)), intercept, 1.0, "lt-v")


def test_answer_comes_from_the_lesion_model_and_keeps_the_image_models_opinion():
    feats = np.zeros(len(FEATURE_NAMES))
    res = lesion_type_answer(_model_favouring("meningioma"), feats, _image_answer("no_tumor"), "seg-v")
    assert res.best_guess == "meningioma" and res.tumor_type == "meningioma" and res.confidence.level == "high"
    assert res.method == "lesion_features" and res.model_version == "lesion-type lt-v on segmentation seg-v"
    params = res.as_params()
    assert params["image_model"]["best_guess"] == "no_tumor" and params["image_model"]["model_version"] == "cnn-v"
    assert list(params["lesion_features"]) == list(FEATURE_NAMES)
    assert sum(params["probabilities"].values()) == pytest.approx(1.0)


def test_input_checks_of_the_image_still_make_the_answer_low():
    odd = Reason("input.not_brain_like", "does not look like a brain")
    res = lesion_type_answer(_model_favouring("glioma"), np.zeros(len(FEATURE_NAMES)), _image_answer("glioma", (odd,)),
                             "seg-v")  # fmt: skip
    assert res.best_guess == "glioma" and res.tumor_type == "uncertain"
    assert [r.code for r in res.confidence.reasons] == ["input.not_brain_like"]
    flat = lesion_type_answer(_model_favouring("glioma", 0.1), np.zeros(len(FEATURE_NAMES)), _image_answer(), "s")
    assert flat.tumor_type == "uncertain" and [r.code for r in flat.confidence.reasons] == ["model.max_probability"]


def test_case_lesions_answer_uses_the_model_and_then_the_rule():
    brain, affine = _brain((40, 48, 40))
    label = np.where(_ball(brain.shape, (20, 24, 20), 5), 2, 0).astype(np.uint8)  # one 4 mL lesion
    stack = np.stack([brain.astype(np.float32)] * 4)
    served: list[LesionTypeModel | None] = [_model_favouring("no_tumor")]
    book = CaseLesions(lambda: None, lesion_type=lambda: served[0])  # type: ignore[arg-type,return-value]
    summary = book.summarise(label, affine, "seg-v", stack)
    assert summary.features is not None and len(summary.features) == len(FEATURE_NAMES)
    res = book.answer(_image_answer("glioma"), summary, "this segmentation")
    assert res.best_guess == "no_tumor" and res.tumor_type == "uncertain"  # tumour found: never a confident no_tumor
    assert [r.code for r in res.confidence.reasons] == ["consistency.tumour_found"]
    served[0] = None  # no model: the image classifier's answer, checked by the rule
    plain = book.summarise(label, affine, "seg-v", stack)
    assert plain.features is None and plain == lesion_summary(label, affine, 0.5, "seg-v")
    res = book.answer(_image_answer("glioma"), plain, "this segmentation")
    assert res.method == "image" and res.tumor_type == "glioma"
