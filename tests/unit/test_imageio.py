"""Bad files become InputError naming the file and the problem."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brain_tumor_mri.imageio import InputError, load_sequences, load_volume, save_label
from brain_tumor_mri.inference.measure import tumor_measurements


def _write(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def test_corrupt_and_truncated(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all" * 10)
    with pytest.raises(InputError, match="bad.nii.gz: cannot read image"):
        load_volume(bad)
    good = _write(tmp_path / "good.nii.gz", np.ones((10, 10, 10)))
    raw = good.read_bytes()
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="trunc.nii.gz: cannot read image"):
        load_volume(trunc)


def test_nan_dimension_and_size(tmp_path):
    data = np.ones((6, 6, 6))
    data[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="nan.nii.gz: image contains NaN or Inf"):
        load_volume(_write(tmp_path / "nan.nii.gz", data))
    with pytest.raises(InputError, match="expected a 3D image"):
        load_volume(_write(tmp_path / "flat.nii.gz", np.ones((6, 6))))
    with pytest.raises(InputError, match="more than the 100 accepted"):
        load_volume(_write(tmp_path / "big.nii.gz", np.ones((6, 6, 6))), max_voxels=100)


def test_sequences_missing_and_mismatched(tmp_path):
    paths = {k: _write(tmp_path / f"{k}.nii.gz", np.ones((5, 6, 7))) for k in ("t1n", "t1c", "t2w", "t2f")}
    stack, affine, missing = load_sequences(paths)
    assert stack.shape == (4, 5, 6, 7) and missing == []
    with pytest.raises(InputError, match="missing sequence\\(s\\): t2w"):
        load_sequences({k: v for k, v in paths.items() if k != "t2w"})
    _, _, missing = load_sequences({k: v for k, v in paths.items() if k != "t2w"}, allow_missing=True)
    assert missing == ["t2w"]
    paths["t1c"] = _write(tmp_path / "shape.nii.gz", np.ones((5, 6, 8)))
    with pytest.raises(InputError, match=r"t1c \(shape.nii.gz\): shape \(5, 6, 8\) differs"):
        load_sequences(paths)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    paths["t1c"] = _write(tmp_path / "moved.nii.gz", np.ones((5, 6, 7)), shifted)
    with pytest.raises(InputError, match="affine differs"):
        load_sequences(paths)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_label_round_trip_keeps_geometry(tmp_path, ext):
    affine = np.array([[-0.9, 0, 0, 10], [0, 1.1, 0, -5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    label = np.zeros((7, 8, 9), np.uint8)
    label[2:4, 3:5, 4:6] = 3
    out = save_label(tmp_path / f"lab{ext}", label, affine)
    data, aff = load_volume(out)
    assert np.array_equal(data.astype(np.uint8), label)
    assert np.allclose(aff, affine, atol=1e-4)


def test_measurements():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 per voxel
    label = np.zeros((10, 10, 10), np.uint8)
    label[0:5, 0, 0] = 2  # 5 voxels edema
    label[5:7, 0, 0] = 1
    label[7:10, 0, 0] = 3
    m = tumor_measurements(label, affine)
    v = m["volumes_ml"]
    assert v["edema"] == pytest.approx(0.040)
    assert v["tumor_core"] == pytest.approx(0.040)
    assert v["whole_tumor"] == pytest.approx(0.080)
    assert m["centroid"]["voxel"] == [4.5, 0.0, 0.0]
    assert m["centroid"]["ras_mm"] == [9.0, 0.0, 0.0]
