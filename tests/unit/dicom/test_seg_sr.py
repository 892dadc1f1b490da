"""DICOM SEG and the TID 1500 volume report: references, codes, algorithm, read back by two readers."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from brain_tumor_dev.dicom_studies import as_standard_axial
from brain_tumor_mri.dicom.derived import derived_objects
from brain_tumor_mri.dicom.seg import Provenance, build_segmentation, read_segmentation
from brain_tumor_mri.dicom.sr import report_volumes
from brain_tumor_mri.dicom.volume import series_volume
from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.inference.measure import tumor_measurements
from brain_tumor_mri.labels import SEG_LABELS

from .conftest import read_series

CODES = {1: ("SCT", "6574001"), 2: ("SCT", "79654002"), 3: ("NCIt", "C113842")}


@pytest.fixture(scope="module")
def flair(written_study):
    """(label on the FLAIR grid, affine, FLAIR headers in slice order without pixel data)."""
    volume, affine, ordered = series_volume(read_series(written_study.files["t2f"]), "t2f")
    for ds in ordered:
        del ds.PixelData
    return affine, ordered


@pytest.fixture(scope="module")
def label(small_case):
    seg, _ = as_standard_axial(small_case.seg, small_case.affine)
    assert set(np.unique(seg)) == {0, 1, 2, 3}, "the test case should have all three compartments"
    return seg


def _saved(ds, tmp_path, name="obj.dcm"):
    path = tmp_path / name
    ds.save_as(str(path), write_like_original=False)
    return pydicom.dcmread(str(path))


def test_seg_references_the_flair_series_and_each_source_slice(flair, label, written_study, tmp_path):
    _, source = flair
    seg = _saved(build_segmentation(label, source, Provenance("v7", corrected=True)), tmp_path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == written_study.study_uid and seg.PatientID == "UNIT-1"
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    (ref,) = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == written_study.series_uids["t2f"]
    flair_uids = {str(ds.SOPInstanceUID) for ds in source}
    assert {str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence} <= flair_uids
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (item,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert str(item.ReferencedSOPInstanceUID) in flair_uids


def test_seg_segments_carry_codes_names_colours_and_the_algorithm(flair, label, tmp_path):
    _, source = flair
    seg = _saved(build_segmentation(label, source, Provenance("v7", corrected=True)), tmp_path)
    by_number = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(by_number) == [1, 2, 3]
    assert [by_number[n].SegmentLabel for n in (1, 2, 3)] == ["Necrotic core", "Edema", "Enhancing tumour"]
    for number, (scheme, value) in CODES.items():
        s = by_number[number]
        code = s.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue) == (scheme, value)
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert s.SegmentAlgorithmType == "SEMIAUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmVersion == "v7" and algo.AlgorithmName
        assert len(s.RecommendedDisplayCIELabValue) == 3


def test_seg_reads_back_with_highdicom_and_pydicom_seg(flair, label, tmp_path):
    _, source = flair
    seg = _saved(build_segmentation(label, source, Provenance("v7", corrected=False)), tmp_path)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert np.array_equal(read_segmentation(seg, source), label)
    import pydicom_seg

    result = pydicom_seg.MultiClassReader().read(seg)
    assert set(np.unique(result.data)) == {0, 1, 2, 3}
    assert int((result.data == 3).sum()) == int((label == 3).sum())


def test_empty_label_still_makes_a_seg(flair, label, tmp_path):
    _, source = flair
    seg = _saved(build_segmentation(np.zeros_like(label), source, Provenance("v7", corrected=True)), tmp_path)
    assert int(seg.NumberOfFrames) == 3 * len(source), "one (empty) frame per segment and slice"
    assert not read_segmentation(seg, source).any()


def test_report_has_the_volume_of_every_segment_and_region(flair, label, tmp_path):
    affine, source = flair
    objects = derived_objects(source, label, affine, Provenance("v7", corrected=True), name="study S")
    sr = _saved(objects.sr, tmp_path, "sr.dcm")
    assert sr.Modality == "SR" and sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == source[0].StudyInstanceUID
    want = tumor_measurements(label, affine)["volumes_ml"]
    got = report_volumes(sr)
    names = {"Necrotic core": "necrotic_core", "Edema": "edema", "Enhancing tumour": "enhancing_tumor"}
    names.update({"Tumour core": "tumor_core", "Whole tumour": "whole_tumor"})
    assert {names[k]: v for k, v in got.items()} == pytest.approx(want, abs=1e-3)
    assert want["whole_tumor"] > 0
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    refs = [ref for g in report.get_volumetric_roi_measurement_groups() for ref in _segment_refs(g)]
    assert sorted(refs) == [(str(objects.seg.SOPInstanceUID), v) for v in sorted(SEG_LABELS.values())]


def _segment_refs(group):
    """(SEG SOP instance UID, segment number) each ROI group of a TID 1500 report points at."""
    for item in group.referenced_segment:
        for ref in getattr(item, "ReferencedSOPSequence", []):
            if "ReferencedSegmentNumber" in ref:
                yield str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber)


def test_label_off_the_flair_grid_is_refused(flair, label):
    affine, source = flair
    shifted = affine.copy()
    shifted[0, 3] += 4.0
    with pytest.raises(InputError, match="affine differs from study S FLAIR series"):
        derived_objects(source, label, shifted, Provenance("v7", corrected=True), name="study S")
    with pytest.raises(InputError, match="no DICOM source series"):
        derived_objects([], label, affine, Provenance("v7", corrected=True), name="study S")
