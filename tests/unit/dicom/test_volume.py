"""DICOM series -> volume: geometry from headers, slice order, rescale, and clear refusals."""

from __future__ import annotations

import random

import nibabel as nib
import numpy as np
import pytest

from brain_tumor_dev.dicom_studies import SeriesSpec, save_dataset, series_datasets
from brain_tumor_mri.dicom.volume import series_geometry, series_volume
from brain_tumor_mri.imageio import InputError

from .conftest import read_series


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize("key", ["t1n", "t2w", "t2f"])
def test_round_trip_matches_the_generated_volume_in_world_space(small_case, written_study, key):
    datasets = read_series(written_study.files[key])
    random.Random(0).shuffle(datasets)  # a PACS returns instances in any order
    volume, affine, ordered = series_volume(datasets, key)
    assert [int(d.InstanceNumber) for d in ordered] == list(range(1, len(ordered) + 1))
    got, got_affine = _canonical(volume, affine)
    want, want_affine = _canonical(small_case.sequences[key], small_case.affine)
    assert np.allclose(got_affine, want_affine, atol=1e-4)
    assert np.allclose(got, want, atol=1e-3), "t2w is stored with slope 0.5 and intercept -10"


def test_standard_axial_storage(written_study):
    ds = read_series(written_study.files["t2f"][:1])[0]
    assert [round(float(v)) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]


def test_oblique_series_keeps_its_geometry(tmp_path):
    angle = np.deg2rad(20)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.5, 1.2, 3.0])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    volume = np.random.default_rng(0).integers(0, 1000, (7, 6, 5)).astype(np.float32)
    from pydicom.dataset import Dataset

    study = Dataset()
    study.StudyInstanceUID, study.PatientID = "1.2.3", "P"
    spec = SeriesSpec("OBLIQUE T2", "t2", "SE", 4000, 90)
    uids = {"series_uid": "1.2.3.4", "frame_uid": "1.2.3.5"}
    datasets = series_datasets(volume, affine, spec, study=study, series_number=1, **uids)
    files = [save_dataset(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(datasets)]
    got, got_affine, _ = series_volume(read_series(files)[::-1], "oblique")
    assert np.allclose(got_affine, affine, atol=1e-5)
    assert np.array_equal(got, volume)


def _series(written_study):
    return read_series(written_study.files["t1n"])


def test_missing_instance_is_a_gap(written_study):
    datasets = _series(written_study)
    del datasets[10]
    with pytest.raises(InputError, match="slice spacing is not uniform.*an instance may be missing"):
        series_geometry(datasets, "study S t1n")


def test_two_instances_at_one_position(written_study):
    datasets = _series(written_study)
    datasets[3].ImagePositionPatient = list(datasets[4].ImagePositionPatient)
    with pytest.raises(InputError, match="two instances at the same slice position"):
        series_geometry(datasets, "s")


def test_mixed_orientation(written_study):
    datasets = _series(written_study)
    datasets[0].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(InputError, match="different ImageOrientationPatient"):
        series_geometry(datasets, "s")


def test_missing_position_names_the_instance(written_study):
    datasets = _series(written_study)
    del datasets[2].ImagePositionPatient
    with pytest.raises(InputError, match=f"instance {datasets[2].SOPInstanceUID} has no valid ImagePositionPatient"):
        series_geometry(datasets, "s")


def test_sheared_stack(written_study):
    datasets = _series(written_study)
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + 0.5 * k, y, z]  # gantry-tilt-like drift along x
    with pytest.raises(InputError, match="do not follow the slice normal"):
        series_geometry(datasets, "s")


def test_multiframe_is_refused(written_study):
    datasets = _series(written_study)
    datasets[0].NumberOfFrames = 40
    with pytest.raises(InputError, match="multi-frame"):
        series_geometry(datasets, "s")


def test_truncated_pixel_data_names_the_instance(written_study):
    datasets = _series(written_study)
    datasets[5].PixelData = datasets[5].PixelData[:100]
    with pytest.raises(InputError, match=f"instance {datasets[5].SOPInstanceUID} cannot be read"):
        series_volume(datasets, "s")


def test_voxel_budget(written_study):
    with pytest.raises(InputError, match="more than the 1,000 accepted"):
        series_volume(_series(written_study), "s", max_voxels=1000)


def test_single_slice_is_not_a_volume(written_study):
    with pytest.raises(InputError, match="at least 2 slices"):
        series_geometry(_series(written_study)[:1], "s")


def test_unsigned_pixels_round_trip(tmp_path):
    """Scanners often store MR magnitude as unsigned 16 bit: values above int16 must survive."""
    from pydicom.dataset import Dataset

    volume = np.random.default_rng(1).integers(0, 60000, (5, 4, 3)).astype(np.float32)
    study = Dataset()
    study.StudyInstanceUID, study.PatientID = "1.2.3", "P"
    spec = SeriesSpec("AX T1", "t1", "SE", 500, 10)
    datasets = series_datasets(volume, np.eye(4), spec, study=study, series_number=1, series_uid="1.4", frame_uid="1.5")
    assert datasets[0].PixelRepresentation == 0
    files = [save_dataset(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(datasets)]
    got, _, _ = series_volume(read_series(files), "unsigned")
    assert np.array_equal(got, volume)
