"""*Train* on the classification model refits the lesion-type model on the datastore's 3D cases.

Deterministic parts (``tests/helpers/consistency.py``): a threshold "segmentation" that outlines
every bright lesion, and cases whose types are told apart by where the lesion lies (deep in the
brain for "glioma", against its top edge for "meningioma", none for "no_tumor").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.inference.lesion_features import FEATURE_NAMES
from brain_tumor_mri.inference.lesion_type import LesionTypeModel, load_lesion_type
from brain_tumor_mri.inference.segmenter import Segmenter, store_expectations
from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.training.lesion_type_fit import refit
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.run import run_training
from tests.helpers.classification import TINY_NET
from tests.helpers.consistency import lesion_case, save_threshold_segmenter, write_case

CASES = {"glioma": [(20.0, 0.0, 0.0), (-20.0, 10.0, 0.0), (15.0, -20.0, 5.0), (-10.0, 20.0, -5.0)],
         "meningioma": [(0.0, 0.0, 56.0), (20.0, 10.0, 52.0), (-20.0, -10.0, 52.0), (0.0, 30.0, 50.0)],
         "no_tumor": [None, None, None, None]}  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Segmenter]:
    root = tmp_path_factory.mktemp("lesion_refit")
    studies = root / "studies"
    for cls, centres in CASES.items():
        for i, centre in enumerate(centres):
            stack, affine, _ = lesion_case([centre] if centre else [], radius_mm=12.0, seed=i)
            write_case(studies, f"{cls}{i}x", stack, affine, cls)
    weights = save_threshold_segmenter(root / "weights" / "segmentation.pt")
    store = ModelStore("segmentation", root / "none.pt", weights, torch.device("cpu"), expect=store_expectations())
    return studies, Segmenter(store, 4.0, False)


def _favouring(cls: str) -> LesionTypeModel:
    f = len(FEATURE_NAMES)
    bias = np.zeros(4)
    bias[TUMOR_CLASSES.index(cls)] = 5.0
    return LesionTypeModel(np.zeros(f), np.ones(f), np.zeros((4, f)), bias, 1.0, "always-" + cls)


def test_refit_publishes_a_model_better_than_the_served_one(site, tmp_path):
    studies, segmenter = site
    out = tmp_path / "model" / "lesion_type.json"
    res = refit(studies, segmenter, _favouring("pituitary"), out, seed=0)
    assert res is not None and res.published and out.is_file()
    basis = res.decision_basis
    assert basis["cases"] == 12 and basis["folds"] == 5 and basis["new"] > basis["served"] == 0.0
    assert basis["only_new_right"] == round(basis["new"] * 12) and basis["only_served_right"] == 0
    assert basis["served_version"] == "always-pituitary"
    model = load_lesion_type(out)
    assert model.version == res.version and model.record["cases"] == 12
    assert sorted(model.record["cv_predictions"]) == sorted(f"{c}{i}x" for c in CASES for i in range(4))


def test_refit_keeps_a_served_model_that_does_better(site, tmp_path, monkeypatch):
    studies, segmenter = site
    out = tmp_path / "lesion_type.json"
    from brain_tumor_mri.training import lesion_type_fit

    def worse(x, y, n_classes, l2):  # every fold's model (and the final one) answers "pituitary"
        return np.zeros((n_classes, x.shape[1])), _favouring("pituitary").intercept

    monkeypatch.setattr(lesion_type_fit, "fit_logistic", worse)
    first = refit(studies, segmenter, None, tmp_path / "first.json", seed=0)  # nothing served: published
    assert first is not None and first.published and first.decision_basis["served"] is None
    res = refit(studies, segmenter, _favouring("no_tumor"), out, seed=0)
    assert res is not None and not res.published and not out.exists()
    assert res.decision.startswith("not published")
    basis = res.decision_basis
    assert basis["new"] == 0.0 and basis["served"] == pytest.approx(4 / 12, abs=1e-4)
    assert basis["only_served_right"] == 4 and basis["only_new_right"] == 0


def test_refit_needs_eight_cases_of_two_types(tmp_path, site):
    _, segmenter = site
    studies = tmp_path / "few"
    for i in range(5):
        stack, affine, _ = lesion_case([(20.0, 0.0, 0.0)], seed=i)
        write_case(studies, f"g{i}", stack, affine, "glioma")
    assert refit(studies, segmenter, None, tmp_path / "x.json", seed=0) is None


def test_classification_training_refits_the_lesion_type_model(site, tmp_path):
    """``run_training`` on 3D cases: the image classifier's run, then the lesion-type refit, in one result."""
    studies, _ = site
    weights_dir = studies.parent / "weights"  # holds the threshold segmentation as the "shipped" model
    opts = TrainOptions(model="classification", studies=studies, weights_dir=weights_dir, init="none",
                        out=tmp_path / "published", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                        kinds=("3d",), epochs=1, batch_size=4, lr=3e-3, device="cpu", bf16="off",
                        network=dict(TINY_NET), input_size=16, workers=0, val_fraction=0.25, seed=0)  # fmt: skip
    result = run_training(opts)
    assert set(result.parts) == {"3d", "lesion_type"}
    part = result.parts["lesion_type"]
    assert part["published"] and part["decision_basis"]["served"] is None  # nothing served before
    assert load_lesion_type(tmp_path / "published" / "lesion_type.json").version == part["version"]
    assert "lesion_type: published" in result.decision
