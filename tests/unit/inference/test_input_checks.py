"""Input checks: they flag pictures and volumes unlike brain MRI, and never the generator's own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brain_tumor_mri.data.anatomies import ANATOMIES
from brain_tumor_mri.data.slices2d import PLANES, pick_slice, render_slice
from brain_tumor_mri.data.synthetic import GeneratorOptions, generate_case
from brain_tumor_mri.inference.input_checks import check_case_3d, check_image_2d
from brain_tumor_mri.labels import SEQUENCES
from brain_tumor_mri.transforms.classify_preprocess import load_image_2d_raw, to_grey

REPO = Path(__file__).resolve().parents[3]
SIZE = 256


def _noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE)).astype(np.float32)


def _checkerboard() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (((yy // 32) + (xx // 32)) % 2 * 255).astype(np.float32)


def _colour_photo() -> np.ndarray:
    """Sky gradient, a sun, grass: smooth and structured, but in colour."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 80 + 100 * yy / SIZE, 140 + 60 * yy / SIZE, 230 - 30 * yy / SIZE
    img[yy > 170] = [60, 150, 50]
    img[(yy - 100) ** 2 + (xx - 180) ** 2 < 30**2] = [250, 220, 40]
    return np.clip(img + np.random.default_rng(1).normal(0, 4, img.shape), 0, 255)


def _blankish() -> np.ndarray:
    return np.clip(120 + np.random.default_rng(2).normal(0, 2, (SIZE, SIZE)), 0, 255).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_noise, {"input.background", "input.texture"}),
        (_checkerboard, {"input.grey_levels", "input.fragmented"}),
        (_colour_photo, {"input.colour"}),
        (_blankish, {"input.low_contrast", "input.texture"}),
    ],
)
def test_non_brain_pictures_are_flagged(make, expected):
    raw = make()
    reasons, stats = check_image_2d(raw, to_grey(raw))
    assert expected <= {r.code for r in reasons}, (reasons, stats)
    assert all(r.message for r in reasons)


@pytest.fixture(scope="module")
def generated_cases():
    """One small case per real anatomy (4 mm), tumour types from the generator's usual mix."""
    opts = GeneratorOptions(metastasis_fraction=0.0)
    return [generate_case(index, 31, 4.0, options=opts) for index in range(len(ANATOMIES))]


def test_generator_pictures_pass_every_check(generated_cases):
    rng = np.random.default_rng(5)
    checked = 0
    for case in generated_cases:
        for plane in PLANES:
            for contrast in SEQUENCES:
                picture, _ = render_slice(case, plane, contrast, pick_slice(case, plane, rng), rng)
                reasons, stats = check_image_2d(picture, to_grey(picture))
                assert reasons == [], (case.anatomy, plane, contrast, stats)
                checked += 1
    assert checked == len(ANATOMIES) * len(PLANES) * len(SEQUENCES)


def test_committed_sample_pictures_pass_every_check():
    files = sorted((REPO / "sample-data" / "kaggle").rglob("*.*"))
    assert files
    for path in files:
        raw = load_image_2d_raw(path)
        reasons, stats = check_image_2d(raw, to_grey(raw))
        assert reasons == [], (path.name, stats)


def test_generator_volumes_pass_and_unlike_volumes_are_flagged(generated_cases):
    for case in generated_cases:
        stack = np.stack([case.sequences[k] for k in SEQUENCES])
        reasons, stats = check_case_3d(stack, case.affine)
        assert reasons == [], (case.anatomy, stats)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    box = np.zeros((4, 48, 48, 48), np.float32)
    box[:, 8:40, 8:40, 8:40] = 1.0  # a 128 mm cube: fills its bounding box
    assert {r.code for r in check_case_3d(box, affine)[0]} == {"input.brain_fill"}
    small = np.zeros((4, 48, 48, 48), np.float32)
    small[:, 20:28, 20:28, 20:28] = 1.0  # 32 mm: far smaller than a brain
    assert "input.brain_extent" in {r.code for r in check_case_3d(small, affine)[0]}
    head = np.random.default_rng(0).uniform(1, 2, (4, 64, 64, 64)).astype(np.float32)  # noisy background, no stripping
    codes = {r.code for r in check_case_3d(head, affine)[0]}
    assert codes == {"input.brain_fill", "input.brain_extent"}
