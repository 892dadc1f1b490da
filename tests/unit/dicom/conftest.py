"""Small generated cases written as DICOM studies (4 mm, 60x60x39), shared by the DICOM tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: A sample-data case with necrotic core, edema and enhancing tumour.
GLIOMA = "BraTS-SYN-00001-000"


@dataclass(frozen=True)
class SmallCase:
    sequences: dict
    seg: np.ndarray
    affine: np.ndarray


@pytest.fixture(scope="session")
def small_case(repo_root):
    """A sample-data glioma (all three compartments) at 4 mm: every second voxel, 60x60x39."""
    from brain_tumor_dev.dicom_studies import read_brats_case

    return SmallCase(*read_brats_case(repo_root / "sample-data" / "brats" / GLIOMA, step=2))


@pytest.fixture(scope="session")
def written_study(small_case, tmp_path_factory):
    """``small_case`` as a DICOM study on disk (standard axial storage), with its files."""
    from brain_tumor_dev.dicom_studies import write_case_study

    return write_case_study(small_case.sequences, small_case.affine, tmp_path_factory.mktemp("dicom"), "UNIT-1")


def read_series(paths: list[Path]) -> list:
    import pydicom

    return [pydicom.dcmread(str(p)) for p in paths]
