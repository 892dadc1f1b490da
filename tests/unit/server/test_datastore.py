"""The app's datastore: Slicer segment names remapped, other processes' writes seen."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
from monailabel.config import settings

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.server.datastore import BrainTumorDatastore, remap_by_segment_names


def test_segment_names_decide_values():
    label = np.array([0, 1, 2, 5])
    info = [{"name": "Enhancing tumor", "idx": 5}, {"name": "edema", "idx": 2}, {"name": "necrotic_core", "idx": 1}]
    assert remap_by_segment_names(label, info, "x").tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="segment 'cyst' \\(value 5\\)"):
        remap_by_segment_names(label, [{"name": "cyst", "idx": 5}], "x")
    with pytest.raises(InputError, match="unknown label values \\[5\\]"):
        remap_by_segment_names(label, None, "x")


def test_write_by_another_process_is_seen(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(studies / "c1.nii.gz"))
    kw = {"extensions": settings.MONAI_LABEL_DATASTORE_FILE_EXT}
    server = BrainTumorDatastore(str(studies), auto_reload=True, **kw)
    other = BrainTumorDatastore(str(studies), auto_reload=False, **kw)  # e.g. a scoring subprocess
    time.sleep(0.3)
    other.update_image_info("c1", {"scores": {"tta": 0.5}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "scores" not in server.get_image_info("c1"):
        time.sleep(0.1)
    assert server.get_image_info("c1")["scores"] == {"tta": 0.5}
    assert not list(studies.glob("*datastore_v2.json.tmp*"))
