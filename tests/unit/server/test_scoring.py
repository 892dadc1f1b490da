"""Uncertainty scoring: stochastic passes differ, scores land in the datastore, re-runs are cheap."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.activelearning.uncertainty import MIN_REGION_VOXELS, case_uncertainty, summarize, tta_flips
from brain_tumor_mri.config import AppConfig
from brain_tumor_mri.imageio import load_sequences, save_nifti
from brain_tumor_mri.inference.segmenter import Segmenter
from brain_tumor_mri.layout import resolve_case
from brain_tumor_mri.networks.checkpoint import save_model
from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.server.scoring import EpistemicScoring, TTAScoring, served_version
from brain_tumor_mri.transforms.preprocess import prepare_case
from tests.helpers.activelearning import TINY_NETWORK, write_3d_case, write_case_meta


def _segmenter(weights: Path) -> Segmenter:
    store = ModelStore("segmentation", weights.parent / "none.pt", weights, torch.device("cpu"))
    return Segmenter(store, 3.0, False)


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """Three unlabelled 3D cases, one labelled, one corrupt, one 2D-kind image."""
    root = tmp_path / "studies"
    for i, cid in enumerate(["c1", "c2", "c3", "lab"]):
        write_3d_case(root, cid, seed=i)
    (root / "labels" / "final").mkdir(parents=True)
    shutil.copy(root / "lab.nii.gz", root / "labels" / "final" / "lab.nii.gz")
    write_case_meta(root, "bad", "3d")
    (root / "bad.nii.gz").write_bytes(b"\x1f\x8b not really a gzip")
    write_case_meta(root, "flat", "2d")
    save_nifti(root / "flat.nii.gz", np.zeros((8, 8, 1), np.float32), np.eye(4), np.float32)
    return root


def _datastore(studies: Path):
    from monailabel.datastore.local import LocalDatastore

    return LocalDatastore(str(studies), extensions=("*.nii.gz", "*.nii"), auto_reload=False)


def test_mc_dropout_passes_differ_plain_forward_is_deterministic(studies, tiny_weights):
    seg = _segmenter(tiny_weights)
    stack, affine, _ = load_sequences(resolve_case(studies / "c1.nii.gz").sequences)
    image = prepare_case(stack, affine, 3.0).image
    a, b = seg.forward(image), seg.forward(image)
    assert torch.equal(a, b)
    mc = torch.stack([seg.forward(image, mc_dropout=True) for _ in range(3)])
    assert float(mc.var(dim=0).max()) > 0
    assert torch.equal(seg.forward(image), a)  # dropout switched back off


def test_case_uncertainty_is_reproducible_and_has_a_map(studies, tiny_weights):
    seg = _segmenter(tiny_weights)
    stack, affine, _ = load_sequences(resolve_case(studies / "c1.nii.gz").sequences)
    prepared = prepare_case(stack, affine, 3.0)
    u1 = case_uncertainty(seg, prepared, "epistemic", 3, seed=1)
    u2 = case_uncertainty(seg, prepared, "epistemic", 3, seed=1)
    # same dropout masks under the same seed; multi-threaded CPU kernels may still differ in
    # the last bits when other processes compete for the cores, hence the tight tolerance
    assert u1.score == pytest.approx(u2.score, rel=1e-4) and u1.score > 0 and u1.passes == 3
    assert u1.map_on_input_grid(prepared).shape == stack.shape[1:]
    assert case_uncertainty(seg, prepared, "tta", 4).passes == 4


def test_summarize_scores_agreement_zero_and_empty_prediction_zero():
    agree = torch.full((3, 8, 8, 8), 0.9)
    assert summarize(iter([agree, agree])).score == pytest.approx(0.0, abs=1e-5)
    assert summarize(iter([torch.zeros(3, 4, 4, 4)] * 2)).score == 0.0
    one = torch.zeros(3, 8, 8, 8)
    one[:, 0, 0, 0] = 1.0  # one flickering voxel cannot reach the maximum score
    assert summarize(iter([one, torch.zeros_like(one)])).score < 1.0 / MIN_REGION_VOXELS
    assert tta_flips(4) == [(), (0,), (1,), (2,)]


def test_scoring_stores_scores_merges_and_skips_when_version_unchanged(studies, tiny_weights, caplog):
    cfg = AppConfig.from_conf({"seg_spacing": "3.0", "mc_samples": "2", "tta_samples": "2"}, studies.parent, studies)
    seg = _segmenter(tiny_weights)
    ds = _datastore(studies)
    version = served_version(seg.store)
    first = EpistemicScoring(cfg, lambda: seg)({}, ds)
    assert first["scored"] == ["c1", "c2", "c3"] and first["failed"] == ["bad"]
    assert "bad" in caplog.text
    TTAScoring(cfg, lambda: seg)({}, ds)
    ds = _datastore(studies)  # what another process reads back from disk
    for cid in ("c1", "c2", "c3"):
        scores = ds.get_image_info(cid)["scores"]
        assert set(scores) == {"epistemic", "tta"}
        assert scores["epistemic"]["model_version"] == version and scores["epistemic"]["score"] >= 0
        assert (studies / "cases" / cid / "uncertainty_epistemic.nii.gz").is_file()
    assert "scores" not in ds.get_image_info("lab") and "scores" not in ds.get_image_info("flat")
    # Epistemic scoring also describes every 3D case, labelled ones included, for "diverse".
    assert first["described"] == ["lab"]
    vectors = {cid: ds.get_image_info(cid)["features"] for cid in ("c1", "c2", "c3", "lab")}
    assert {v["model_version"] for v in vectors.values()} == {version}
    assert {len(v["vector"]) for v in vectors.values()} == {TINY_NETWORK["channels"][-1]}
    assert vectors["c1"]["vector"] != vectors["c2"]["vector"]
    assert "features" not in ds.get_image_info("flat")
    again = EpistemicScoring(cfg, lambda: seg)({}, ds)
    assert again["scored"] == [] and again["skipped"] == 3 and again["described"] == []
    torch.manual_seed(1)
    save_model(
        build_segmentation_network(**TINY_NETWORK), tiny_weights, {"kind": "segmentation", "network": TINY_NETWORK}
    )
    assert EpistemicScoring(cfg, lambda: seg)({}, ds)["scored"] == ["c1", "c2", "c3"]
    assert ds.get_image_info("c1")["scores"]["tta"]["model_version"] == version  # left alone


def test_scoring_without_weights_reports_instead_of_crashing(studies, tmp_path):
    cfg = AppConfig.from_conf({"seg_spacing": "3.0"}, studies.parent, studies)
    seg = _segmenter(tmp_path / "missing" / "segmentation.pt")
    result = EpistemicScoring(cfg, lambda: seg)({}, _datastore(studies))
    assert result["scored"] == [] and "error" in result
