"""Every dataset's label numbering converts to the one internal convention."""

from __future__ import annotations

import numpy as np
import pytest

from brain_tumor_mri.labels import class_from_folder, convert_labels, label_to_regions, regions_to_label


@pytest.mark.parametrize(
    "convention, src, expected",
    [
        ("brats2021", [0, 1, 2, 4], [0, 1, 2, 3]),
        ("brats2023", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("brats2024", [0, 1, 2, 3, 4], [0, 1, 2, 3, 0]),
        ("msd", [0, 1, 2, 3], [0, 2, 1, 3]),
    ],
)
def test_conversions(convention, src, expected):
    out = convert_labels(np.array(src, dtype=np.float32), convention)
    assert out.dtype == np.uint8
    assert out.tolist() == expected


def test_unknown_values_are_named():
    with pytest.raises(ValueError, match=r"case7: unknown label values \[3\] for the brats2021"):
        convert_labels(np.array([0, 1, 3]), "brats2021", source="case7")
    with pytest.raises(ValueError, match="non-integer"):
        convert_labels(np.array([0, 1.5]), "internal")
    with pytest.raises(ValueError, match="NaN"):
        convert_labels(np.array([0, np.nan]), "internal")
    with pytest.raises(ValueError, match=r"unknown label values \[-1\]"):
        convert_labels(np.array([0, -1]), "internal")


def test_kaggle_folder_names():
    assert class_from_folder("glioma_tumor") == "glioma"
    assert class_from_folder("notumor") == "no_tumor"
    assert class_from_folder("Pituitary") == "pituitary"
    with pytest.raises(ValueError, match="unknown tumour class folder 'cats'"):
        class_from_folder("cats")


def test_regions_round_trip():
    label = np.array([0, 1, 2, 3, 2, 0], dtype=np.uint8)
    regions = label_to_regions(label)
    assert regions.tolist() == [[0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]]
    assert regions_to_label(regions).tolist() == label.tolist()
    # nesting: ET outside TC/WT cannot exist in the decoded label
    assert regions_to_label(np.array([[0.0], [0.0], [0.9]])).tolist() == [0]
