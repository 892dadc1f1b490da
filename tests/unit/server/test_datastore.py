"""The app's datastore: Slicer segment names remapped, other processes' writes seen."""

from __future__ import annotations

import json
import threading
import time

import nibabel as nib
import numpy as np
import pytest
from monailabel.config import settings

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.server.datastore import BrainTumorDatastore, remap_by_segment_names
from brain_tumor_mri.server.principal import Principal, reset_principal, set_principal


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


#: datastores opened without a file watcher: each reloads only when it changes something
NO_WATCHER = {"extensions": settings.MONAI_LABEL_DATASTORE_FILE_EXT, "auto_reload": False}


def _one_case_and_a_label(tmp_path):
    """A studies folder holding case c1 (a 4^3 volume), and a valid label file for it outside."""
    studies = tmp_path / "studies"
    studies.mkdir()
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    nib.save(image, str(studies / "c1.nii.gz"))
    label = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.pad(np.full((2, 2, 2), 2, np.uint8), 1), np.eye(4)), str(label))
    return studies, image, label


def test_a_reconcile_in_another_process_cannot_drop_a_label_saved_meanwhile(tmp_path):
    """A training subprocess opening the datastore reconciles it: read the file, list the folders,
    write the file. A label the server saved between that read and that write was overwritten by
    the stale copy (its registration and provenance lost; seen under the soak test's load). Here
    the reconcile is paused just before its write; the server's save must wait for it and keep
    both its own entry and the reconcile's.
    """
    studies, image, label = _one_case_and_a_label(tmp_path)
    server = BrainTumorDatastore(str(studies), **NO_WATCHER)
    nib.save(image, str(studies / "c2.nii.gz"))  # a new case on disk: the reconcile has something to write
    other = BrainTumorDatastore(str(studies), read_only=True, **NO_WATCHER)  # opened; reconciles on refresh below
    paused, go = threading.Event(), threading.Event()
    write = other._update_datastore_file

    def write_after_a_pause(lock: bool = True) -> None:
        paused.set()
        go.wait(10)
        write(lock)

    other._update_datastore_file = write_after_a_pause
    reconcile = threading.Thread(target=other.refresh)
    reconcile.start()
    assert paused.wait(10), "the reconcile found nothing to write"

    def save() -> None:
        token = set_principal(Principal("alice", verified=True))
        try:
            server.save_label("c1", str(label), "final", {})
        finally:
            reset_principal(token)

    saver = threading.Thread(target=save)
    saver.start()
    saver.join(1.0)
    saved_during_reconcile = not saver.is_alive()
    go.set()
    reconcile.join(10)
    saver.join(10)
    assert not reconcile.is_alive() and not saver.is_alive()
    on_disk = json.loads((studies / "datastore_v2.json").read_text())
    assert set(on_disk["objects"]) == {"c1", "c2"}
    assert on_disk["objects"]["c1"]["labels"]["final"]["info"]["provenance"]["version"] == 1
    assert server.get_label_info("c1", "final")["provenance"]["saved_by"] == "alice"
    assert not saved_during_reconcile, "the save did not wait for the reconcile holding the datastore file"


STALE_CHANGES = {  # name: (the change, made by the stale process; what it must leave on disk)
    "update_image_info": (
        lambda ds, upload: ds.update_image_info("c1", {"scores": {"tta": 0.5}}),
        lambda objects, studies: objects["c1"]["image"]["info"]["scores"] == {"tta": 0.5},
    ),
    "add_image": (
        lambda ds, upload: ds.add_image("c2", str(upload), {}),
        lambda objects, studies: (
            objects["c2"]["image"]["info"]["name"] == "c2.nii.gz" and (studies / "c2.nii.gz").is_file()
        ),
    ),
    "update_label_info": (
        lambda ds, upload: ds.update_label_info("c1", "original", {"reviewed": True}),
        lambda objects, studies: objects["c1"]["labels"]["original"]["info"]["reviewed"] is True,
    ),
}


@pytest.mark.parametrize("change", sorted(STALE_CHANGES))
def test_a_stale_process_cannot_drop_a_label_saved_meanwhile(tmp_path, change):
    """A scoring process writes its scores with ``update_image_info`` from the datastore file it
    read when it opened; an upload or a label-info edit writes the same way. A label the server
    saved since then was overwritten by that stale copy. Each change must build on the file as
    it is when the change is written.
    """
    studies, image, label = _one_case_and_a_label(tmp_path)
    server = BrainTumorDatastore(str(studies), **NO_WATCHER)
    server.save_label("c1", str(label), "original", {})
    other = BrainTumorDatastore(str(studies), **NO_WATCHER)  # opened now: it knows c1 and its "original" label
    token = set_principal(Principal("alice", verified=True))
    try:
        server.save_label("c1", str(label), "final", {})
    finally:
        reset_principal(token)
    upload = tmp_path / "c2.nii.gz"
    nib.save(image, str(upload))
    make, made = STALE_CHANGES[change]
    make(other, upload)
    on_disk = json.loads((studies / "datastore_v2.json").read_text())["objects"]
    assert on_disk["c1"]["labels"]["final"]["info"]["provenance"]["saved_by"] == "alice"
    assert made(on_disk, studies), f"{change} did not land"
    assert other.get_label_info("c1", "final")["provenance"]["version"] == 1
