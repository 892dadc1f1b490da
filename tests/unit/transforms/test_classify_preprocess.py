"""Classification preprocessing: shapes per input format, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.transforms.classify_preprocess import (
    ClassPreprocess,
    fit_cube,
    input_kind_of,
    prepare_case_3d,
    prepare_image,
    prepare_image_file,
)
from tests.helpers.classification import brain_slice, write_png

SPEC = ClassPreprocess("2d", 32)


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(path))
    return path


def test_png_grey_rgb_jpeg_and_nifti_give_one_channel_square(tmp_path: Path) -> None:
    grey = brain_slice(0, seed=1, size=80)
    paths = [
        write_png(tmp_path / "grey.png", grey),
        write_png(tmp_path / "rgb.png", np.stack([grey] * 3, axis=-1)),
        write_png(tmp_path / "rgba_opaque.png", np.dstack([grey, grey, grey, np.full_like(grey, 255)])),
        _nifti(tmp_path / "slice.nii.gz", grey),
        _nifti(tmp_path / "singleton.nii.gz", grey[:, :, None]),
    ]
    from PIL import Image

    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "photo.jpg", quality=90)
    paths.append(tmp_path / "photo.jpg")
    for path in paths:
        assert input_kind_of(path) == "2d", path.name
        x = prepare_image_file(path, SPEC)
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32, path.name
        assert torch.isfinite(x).all() and float(x.std()) > 0.1


def test_rgb_grey_equivalence_and_crop_ignores_black_border() -> None:
    grey = brain_slice(1, seed=2, size=64)
    assert torch.allclose(prepare_image(grey, 32), prepare_image(np.stack([grey] * 3, axis=-1), 32), atol=1e-4)
    padded = np.zeros((200, 120), np.uint8)
    padded[40:104, 30:94] = grey
    a, b = prepare_image(grey, 32), prepare_image(padded, 32)
    assert float((a - b).abs().mean()) < 0.05  # same content once the border is cropped away


def test_3d_case_shape_and_background() -> None:
    rng = np.random.default_rng(0)
    stack = np.zeros((4, 40, 44, 36), np.float32)
    stack[:, 8:32, 8:36, 6:30] = rng.uniform(10, 100, (4, 24, 28, 24))
    x = prepare_case_3d(stack, np.diag([2.0, 2.0, 2.0, 1.0]), ClassPreprocess("3d", 16, 4.0))
    assert x.shape == (4, 16, 16, 16)
    assert float(x[:, 0, 0, 0].abs().sum()) == 0.0  # corner is background
    assert fit_cube(torch.ones(2, 30, 10, 20), 16).shape == (2, 16, 16, 16)


def test_not_an_image(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("hello, not a picture")
    with pytest.raises(InputError, match="not an image or unreadable"):
        prepare_image_file(bad, SPEC)


def test_empty_image(tmp_path: Path) -> None:
    path = write_png(tmp_path / "black.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="empty"):
        prepare_image_file(path, SPEC)


def test_3d_volume_sent_to_2d_path(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "vol.nii.gz", np.random.default_rng(0).random((30, 30, 30)))
    assert input_kind_of(path) == "3d"
    with pytest.raises(InputError, match="expected a 2D image, got a 3D volume"):
        prepare_image_file(path, SPEC)


def test_tiny_and_one_pixel_high_images(tmp_path: Path) -> None:
    tiny = write_png(tmp_path / "tiny.png", brain_slice(0, seed=0, size=64)[::8, ::8])
    with pytest.raises(InputError, match="too small"):
        prepare_image_file(tiny, SPEC)
    with pytest.raises(InputError, match="1x300|300x1"):
        prepare_image(np.arange(300, dtype=np.float32)[None, :])


def test_unexpected_channels_and_transparency(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="5 channels"):
        prepare_image(np.random.default_rng(0).random((32, 32, 5)))
    grey = brain_slice(0, seed=0, size=32)
    alpha = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    path = write_png(tmp_path / "alpha.png", np.dstack([grey, grey, grey, alpha]))
    with pytest.raises(InputError, match="4 channels"):
        prepare_image_file(path, SPEC)


def test_bad_3d_stack_shape() -> None:
    with pytest.raises(InputError, match="four sequences"):
        prepare_case_3d(np.ones((3, 20, 20, 20)), np.eye(4))
