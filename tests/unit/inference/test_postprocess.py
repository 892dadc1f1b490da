"""The low-confidence component filter: what it drops, what it demotes, what it reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brain_tumor_mri.inference.postprocess import ComponentFilter
from brain_tumor_mri.inference.segmenter import Segmenter, segmentation_store
from brain_tumor_mri.labels import SEG_LABELS, SEQUENCES, regions_to_label
from brain_tumor_mri.networks.checkpoint import sidecar_path
from tests.helpers.consistency import lesion_case, save_threshold_segmenter

EDEMA, CORE, ENH = SEG_LABELS["edema"], SEG_LABELS["necrotic_core"], SEG_LABELS["enhancing_tumor"]


def _two_blobs() -> np.ndarray:
    """(3, 12, 12, 12) probabilities: a sure lesion (WT/TC/ET 0.97) and an unsure blob (WT 0.7, TC/ET 0)."""
    probs = np.zeros((3, 12, 12, 12), np.float32)
    probs[:, 1:4, 1:4, 1:4] = 0.97
    probs[0, 7:11, 7:11, 7:11] = 0.7
    return probs


def test_no_block_leaves_the_label_alone():
    probs = _two_blobs()
    label = regions_to_label(probs)
    out, dropped = ComponentFilter.from_meta({"kind": "segmentation"}).apply(label, probs)
    assert out is label and dropped == []


def test_unsure_whole_tumour_component_is_removed_and_reported():
    probs = _two_blobs()
    label = regions_to_label(probs)
    out, dropped = ComponentFilter({"whole_tumor": 0.9}).apply(label, probs)
    assert (out[7:11, 7:11, 7:11] == 0).all(), "the 0.7 blob is removed"
    assert (out[1:4, 1:4, 1:4] == ENH).all(), "the sure lesion is untouched"
    assert (label[7:11, 7:11, 7:11] == EDEMA).all(), "the input label is not modified"
    assert len(dropped) == 1
    d = dropped[0]
    assert (d.region, d.voxels) == ("whole_tumor", 64)
    assert d.mean_prob == pytest.approx(0.7, abs=1e-6)
    assert d.centroid == pytest.approx((8.5, 8.5, 8.5))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 0.0, 5.0]
    record = d.as_params(affine, 0.008)
    assert record == {"region": "whole_tumor", "volume_ml": 0.512, "mean_probability": 0.7,
                      "centroid_ras_mm": [7.0, 17.0, 22.0], "demoted_to": "background"}  # fmt: skip


def test_unsure_core_becomes_edema_and_unsure_enhancing_becomes_necrotic_core():
    probs = np.zeros((3, 10, 10, 10), np.float32)
    probs[0, 1:9, 1:9, 1:9] = 0.99  # one sure whole tumour
    probs[1, 2:4, 2:4, 2:4] = 0.6  # an unsure core part
    probs[1, 6:8, 6:8, 6:8] = 0.95  # a sure core part ...
    probs[2, 6:8, 6:8, 6:8] = 0.55  # ... with unsure enhancement
    label = regions_to_label(probs)
    out, dropped = ComponentFilter({"tumor_core": 0.8, "enhancing_tumor": 0.8}).apply(label, probs)
    assert (out[2:4, 2:4, 2:4] == EDEMA).all()
    assert (out[6:8, 6:8, 6:8] == CORE).all()
    assert (out > 0).sum() == (label > 0).sum(), "demoting never shrinks the whole tumour"
    assert [(d.region, d.voxels) for d in dropped] == [("tumor_core", 8), ("enhancing_tumor", 8)]


def test_components_are_face_connected():
    """A blob touching a lesion only at a corner is judged on its own."""
    probs = np.zeros((3, 8, 8, 8), np.float32)
    probs[0, 1:4, 1:4, 1:4] = 0.98
    probs[0, 4:6, 4:6, 4:6] = 0.6  # shares only the corner (3,3,3)-(4,4,4)
    out, dropped = ComponentFilter({"whole_tumor": 0.9}).apply(regions_to_label(probs), probs)
    assert (out[1:4, 1:4, 1:4] > 0).all() and (out[4:6, 4:6, 4:6] == 0).all()
    assert [d.voxels for d in dropped] == [8]


@pytest.mark.parametrize("taus", [{"necrosis": 0.5}, {"whole_tumor": 1.5}, {"whole_tumor": -0.1}])
def test_bad_thresholds_are_refused(taus):
    with pytest.raises(ValueError, match="postprocess"):
        ComponentFilter(taus)


def test_segmenter_applies_the_sidecar_filter_and_can_skip_it(tmp_path):
    """Real weights, real store: a dim lesion is left out and listed; postprocess=False keeps it."""
    stack, affine, lesion = lesion_case([(-40.0, 20.0, 10.0), (40.0, -30.0, 0.0)], radius_mm=10.0)
    dim = lesion & (np.indices(lesion.shape)[0] * 4.0 - 80.0 > 0)  # the lesion at x = +40 mm
    stack[:, dim] *= 0.6  # dimmer: lower FLAIR z-scores, so a lower probability
    weights = tmp_path / "weights" / "segmentation.pt"
    save_threshold_segmenter(weights)
    store = segmentation_store(tmp_path / "studies", weights.parent, torch.device("cpu"), False)
    segmenter = Segmenter(store, 4.0, False)
    flair = stack[SEQUENCES.index("t2f")]
    brain = flair > 0
    z = (flair - flair[brain].mean()) / flair[brain].std()  # what the shared preprocessing's z-score gives
    z_dim, z_bright = float(np.median(z[dim])), float(np.median(z[lesion & ~dim]))
    gain = 3.0 / (z_bright - z_dim)
    save_threshold_segmenter(weights, z_threshold=z_dim - 0.3 / gain, gain=gain)  # dim ~ sigmoid(0.3), bright ~ 1
    raw = segmenter.segment(stack, affine, postprocess=False)
    parts = [(raw.probs[0][m & (raw.label > 0)]).mean() for m in (lesion & ~dim, dim)]
    assert parts[0] > 0.9 > parts[1] > 0.5, parts
    meta = json.loads(sidecar_path(weights).read_text())
    meta["postprocess"] = {"min_mean_prob": {"whole_tumor": 0.9}}
    sidecar_path(weights).write_text(json.dumps(meta))
    served = segmenter.segment(stack, affine)
    assert (served.label[dim] == 0).all() and (served.label[lesion & ~dim] > 0).any()
    assert [c["region"] for c in served.candidates] == ["whole_tumor"]
    removed_ml = float(((raw.label > 0) & (served.label == 0)).sum()) * 0.064
    assert served.candidates[0]["volume_ml"] == pytest.approx(removed_ml, abs=1e-3)
    assert served.candidates[0]["centroid_ras_mm"][0] == pytest.approx(40.0, abs=4.0)
    assert served.measurements["volumes_ml"]["whole_tumor"] == pytest.approx(
        raw.measurements["volumes_ml"]["whole_tumor"] - removed_ml, abs=1e-3
    )
