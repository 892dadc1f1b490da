"""The shared preprocessing maps back onto the input grid exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.labels import label_to_regions, regions_to_label
from brain_tumor_mri.transforms.preprocess import prepare_case, restore

AFFINES = {
    "ras_1mm": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps_oblique_axes": np.array([[-1.0, 0, 0, 30], [0, 0, 1.2, -10], [0, 1.5, 0, 5], [0, 0, 0, 1]]),
}


def _case(seed=0):
    rng = np.random.default_rng(seed)
    stack = np.zeros((4, 40, 44, 36), np.float32)
    stack[:, 6:34, 8:38, 4:32] = rng.random((4, 28, 30, 28)) * 100 + 50
    label = np.zeros((40, 44, 36), np.uint8)
    label[12:26, 14:28, 10:24] = 2
    label[15:23, 17:25, 13:21] = 3
    label[17:21, 19:23, 15:19] = 1
    return stack, label


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_window_shape_and_normalisation(name):
    stack, label = _case()
    p = prepare_case(stack, AFFINES[name], 2.0, label)
    assert p.image.shape[0] == 4 and all(s % 16 == 0 for s in p.image.shape[1:])
    assert p.label is not None and p.label.shape == p.image.shape[1:]
    brain = p.image[0] != 0
    assert abs(float(p.image[0][brain].mean())) < 0.05
    assert abs(float(p.image[0][brain].std()) - 1) < 0.05
    assert set(torch.unique(p.label).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_restore_returns_input_grid(name):
    stack, label = _case()
    p = prepare_case(stack, AFFINES[name], 1.0, label)
    back = regions_to_label(restore(label_to_regions(p.label), p.geometry))
    assert back.shape == label.shape
    agreement = (back == label).mean()
    assert agreement > 0.98, agreement


def test_empty_case_is_an_input_error():
    with pytest.raises(InputError, match="all sequences are empty"):
        prepare_case(np.zeros((4, 8, 8, 8), np.float32), np.eye(4), 2.0)


def _same_window(a, b) -> bool:
    ga, gb = a.geometry, b.geometry
    return (ga.work_shape, ga.start, ga.size) == (gb.work_shape, gb.start, gb.size)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_memory_order_and_orientation_do_not_change_the_network_input(name):
    """A Fortran-ordered stack (as NIfTI loads) is resampled in its own memory order, before
    reorienting; the network sees the same image as from a C-ordered stack, and the same voxels
    stored with a flipped first axis (the affine saying so) give the same image too."""
    stack, label = _case(seed=3)
    affine = AFFINES[name]
    c_order = prepare_case(np.ascontiguousarray(stack), affine, 2.0, label)
    fortran = prepare_case(np.stack([np.asfortranarray(ch) for ch in stack]), affine, 2.0, label)
    assert _same_window(fortran, c_order) and fortran.geometry.in_shape == c_order.geometry.in_shape
    assert torch.allclose(fortran.image, c_order.image, atol=1e-5)
    assert torch.equal(fortran.label, c_order.label)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = stack.shape[1] - 1  # stored index i holds what index n-1-i held
    flipped = prepare_case(np.stack([np.asfortranarray(ch[::-1]) for ch in stack]), affine @ flip, 2.0, label[::-1])
    assert _same_window(flipped, c_order)
    assert torch.allclose(flipped.image, c_order.image, atol=1e-5)
    assert torch.equal(flipped.label, c_order.label)
    # and the network's output goes back onto each input's own grid, flipped where the storage is
    out = torch.rand((3, *c_order.image.shape[1:]), generator=torch.Generator().manual_seed(0))
    back, back_flipped = restore(out, c_order.geometry), restore(out, flipped.geometry)
    assert back.shape == back_flipped.shape == (3, *stack.shape[1:]) and back_flipped.flags.c_contiguous
    assert np.allclose(back_flipped, back[:, ::-1], atol=1e-6)
