"""Networks, the Classifier (probabilities, determinism) and the MONAI Label infer task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import HTTPException

from brain_tumor_mri.config import AppConfig
from brain_tumor_mri.imageio import save_nifti
from brain_tumor_mri.inference.classifier import build_classifier
from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.networks.classifier import build_classification_network
from brain_tumor_mri.server.infer_classification import BrainTumorClassInfer
from tests.helpers.classification import TINY_NET, brain_slice, write_png
from tests.helpers.consistency import save_constant_classifier


@pytest.mark.parametrize(("dims", "channels", "shape"), [(2, 1, (2, 1, 32, 32)), (3, 4, (2, 4, 16, 16, 16))])
def test_network_output_shape(dims: int, channels: int, shape: tuple[int, ...]) -> None:
    net = build_classification_network(dims, channels, **TINY_NET).eval()
    with torch.inference_mode():
        assert net(torch.randn(*shape)).shape == (2, len(TUMOR_CLASSES))


def test_default_network_is_small() -> None:
    net = build_classification_network(2, 1)
    assert sum(p.numel() for p in net.parameters()) < 1_000_000


def _classifier(weights: Path):
    return build_classifier(weights, torch.device("cpu"), reduced_precision=False)


def test_probabilities_sum_to_one_and_are_deterministic(tiny_weights: Path, tmp_path: Path, case_stack) -> None:
    clf = _classifier(tiny_weights)
    image = write_png(tmp_path / "slice.png", brain_slice(2, seed=5))
    first, second = clf.classify_image(image), clf.classify_image(image)
    assert list(first.probabilities) == list(TUMOR_CLASSES)
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert first == second and first.input_kind == "2d"
    assert first.best_guess == max(first.probabilities, key=first.probabilities.get)
    assert first.tumor_type == (first.best_guess if first.confidence.level == "high" else "uncertain")
    case = clf.classify_case(*case_stack)
    assert case.input_kind == "3d" and sum(case.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert case == clf.classify_case(*case_stack)


class FakeDatastore:
    """Records update_image_info calls like MONAI Label's LocalDatastore."""

    def __init__(self, ids: set[str]) -> None:
        self.ids, self.info = ids, {}

    def update_image_info(self, image_id: str, info: dict) -> None:
        if image_id not in self.ids:
            raise KeyError(image_id)
        self.info.setdefault(image_id, {}).update(info)


def _task(tmp_path: Path, weights: Path, store: FakeDatastore) -> BrainTumorClassInfer:
    cfg = AppConfig.from_conf({}, app_dir=tmp_path, studies=tmp_path / "studies", weights_dir=weights)
    return BrainTumorClassInfer(cfg, _classifier(weights), lambda: store)


def test_infer_task_2d_and_3d_records_prediction(tiny_weights: Path, tmp_path: Path, case_stack) -> None:
    studies = tmp_path / "studies"
    (studies / "cases" / "case1").mkdir(parents=True)
    write_png(studies / "img1.png", brain_slice(0, seed=1))
    stack, affine = case_stack
    save_nifti(studies / "case1.nii.gz", stack[3], affine, np.float32)
    for key, k in (("t1n", 0), ("t1c", 1), ("t2w", 2)):
        save_nifti(studies / "cases" / "case1" / f"{key}.nii.gz", stack[k], affine, np.float32)
    store = FakeDatastore({"img1", "case1"})
    task = _task(tmp_path, tiny_weights, store)
    assert task.info()["type"] == "classification" and task.labels == list(TUMOR_CLASSES) and task.is_valid()
    label, params = task({"image": str(studies / "img1.png")})
    assert label is None and params["input_kind"] == "2d" and params["classes"] == list(TUMOR_CLASSES)
    assert sum(params["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert store.info["img1"]["classification"]["tumor_type"] == params["tumor_type"]
    _, params3 = task({"image": str(studies / "case1.nii.gz"), "image_id": "case1"})
    assert params3["input_kind"] == "3d" and "ts" in store.info["case1"]["classification"]
    json.dumps(params3)  # travels as JSON


def test_infer_task_bad_input_is_422(tiny_weights: Path, tmp_path: Path) -> None:
    task = _task(tmp_path, tiny_weights, FakeDatastore(set()))
    bad = tmp_path / "upload.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(HTTPException) as err:
        task({"image": str(bad)})
    assert err.value.status_code == 422 and "not an image" in err.value.detail
    lonely = tmp_path / "lonely.nii.gz"
    save_nifti(lonely, np.ones((20, 20, 20)), np.eye(4), np.float32)
    with pytest.raises(HTTPException) as err:
        task({"image": str(lonely)})
    assert err.value.status_code == 422 and "missing sequence" in err.value.detail


def test_answer_contract_confident_and_unlike_input(tmp_path: Path) -> None:
    """A confident answer names the class; a non-brain picture keeps the probabilities but says uncertain."""
    weights = tmp_path / "w"
    save_constant_classifier(weights / "classification_2d.pt", "2d", answer="pituitary", logit=6.0)
    save_constant_classifier(weights / "classification_3d.pt", "3d", answer="pituitary", logit=6.0)
    clf = _classifier(weights)
    sure = clf.classify_image(write_png(tmp_path / "slice.png", brain_slice(2, seed=5, size=128)))
    params = sure.as_params()
    assert params["tumor_type"] == params["best_guess"] == "pituitary"
    conf = params["confidence"]
    assert conf["level"] == "high" and conf["reasons"] == [] and conf["max_probability"] > 0.98
    assert conf["thresholds"] == {"temperature": 1.0, "max_probability_min": 0.5, "energy_max": None,
                                  "source": "default", "feature_distance_max": None}  # fmt: skip
    assert conf["feature_distance"] is None  # no fitted feature statistics: the check is off
    assert set(conf["input_stats"]) >= {"chroma", "foreground", "neighbour_correlation"}
    assert conf["margin"] == pytest.approx(conf["max_probability"] - max(
        v for k, v in params["probabilities"].items() if k != "pituitary"))  # fmt: skip
    rng = np.random.default_rng(0)
    noise = write_png(tmp_path / "noise.png", rng.integers(0, 256, (128, 128), dtype=np.uint8))
    odd = clf.classify_image(noise).as_params()
    assert odd["tumor_type"] == "uncertain" and odd["best_guess"] == "pituitary"
    assert odd["confidence"]["level"] == "low" and "input.texture" in [r["code"] for r in odd["confidence"]["reasons"]]
    assert odd["probabilities"] == pytest.approx(params["probabilities"])  # kept, only the verdict changes
    json.dumps(odd)


def test_low_probability_and_energy_make_an_answer_low(tmp_path: Path) -> None:
    weights = tmp_path / "w"
    save_constant_classifier(weights / "classification_2d.pt", "2d", answer="glioma", logit=0.5)  # p ~ 0.35
    image = write_png(tmp_path / "slice.png", brain_slice(0, seed=1, size=128))
    res = _classifier(weights).classify_image(image)
    assert res.tumor_type == "uncertain" and [r.code for r in res.confidence.reasons] == ["model.max_probability"]
    meta_path = weights / "classification_2d.json"
    meta = json.loads(meta_path.read_text())
    meta["calibration"] = {"temperature": 0.1, "ood": {"energy_max": -100.0, "max_probability_min": 0.5}}
    meta_path.write_text(json.dumps(meta))  # T = 0.1: p = 1 / (1 + 3 e^-5); energy -0.5 is above -100
    res = _classifier(weights).classify_image(image)
    assert res.confidence.max_probability == pytest.approx(1 / (1 + 3 * np.exp(-5.0)))
    assert res.confidence.energy == pytest.approx(-0.1 * (5.0 + np.log(1 + 3 * np.exp(-5.0))))
    assert res.tumor_type == "uncertain" and [r.code for r in res.confidence.reasons] == ["model.energy"]


def test_features_split_reproduces_the_network_output() -> None:
    from brain_tumor_mri.inference.feature_ood import logits_and_features

    net = build_classification_network(2, 1, **TINY_NET).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        logits, feats = logits_and_features(net, x)
        assert torch.equal(logits, net(x)) and feats is not None and feats.shape[0] == 2 and feats.ndim == 2
        plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 4)).eval()
        out, none = logits_and_features(plain, x)
        assert none is None and torch.equal(out, plain(x))
