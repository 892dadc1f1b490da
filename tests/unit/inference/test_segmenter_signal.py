"""The served label never puts tumour where no sequence has signal (outside a skull-stripped brain)."""

from __future__ import annotations

import numpy as np
import torch

from brain_tumor_mri.imageio import nonzero_mask
from brain_tumor_mri.inference.segmenter import Segmenter, segmentation_store
from tests.helpers.consistency import SPACING_MM, lesion_case, save_threshold_segmenter


def test_the_brain_is_where_any_sequence_is_non_zero():
    stack = np.zeros((4, 3, 3, 3), np.float32)
    stack[2, 0, 0, 0] = 5.0  # one sequence only
    stack[0, 1, 1, 1] = -3.0  # negative values are signal too (z-scored input)
    assert nonzero_mask(stack).sum() == 2 and nonzero_mask(stack)[0, 0, 0] and nonzero_mask(stack)[1, 1, 1]


def test_nothing_is_segmented_outside_the_brain_even_when_the_network_says_so(tmp_path):
    """Weights that call every voxel above z = -2 tumour cover the empty corners of the brain box too."""
    stack, affine, _ = lesion_case([(0.0, 0.0, 0.0)])
    brain = nonzero_mask(stack)
    weights = save_threshold_segmenter(tmp_path / "weights" / "segmentation.pt", z_threshold=-2.0)
    store = segmentation_store(tmp_path / "studies", weights.parent, torch.device("cpu"), False)
    seg = Segmenter(store, SPACING_MM, False).segment(stack, affine, postprocess=False)
    # the network's own answer in the empty space: run it without the mask to show the case tests something
    prepared = Segmenter(store, SPACING_MM, False).prepare(stack, affine)
    empty_in_box = (prepared.image.abs().sum(0) == 0).numpy()
    net_probs = Segmenter(store, SPACING_MM, False).forward(prepared.image)[0].numpy()
    assert empty_in_box.any() and (net_probs[empty_in_box] > 0.5).all(), "the network calls the empty box tumour"
    assert (seg.label[~brain] == 0).all() and (seg.probs[:, ~brain] == 0).all()
    assert (seg.label[brain] > 0).mean() > 0.95, "inside the brain the network's answer is kept"
    assert seg.measurements["volumes_ml"]["whole_tumor"] < brain.sum() * SPACING_MM**3 / 1000 + 1e-6
