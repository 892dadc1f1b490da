"""The preprocessed-case cache: hits, misses, label invalidation, damaged files, full disk, killed writers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brain_tumor_mri.imageio import load_volume, save_label
from brain_tumor_mri.training.cache import CaseCache
from brain_tumor_mri.training.cache_file import CacheCorrupt, CacheError, read_entry, temp_name
from brain_tumor_mri.training.cases import segmentation_cases
from brain_tumor_mri.training.seg_data import seg_family
from brain_tumor_mri.training.store import open_store
from tests.helpers.segmentation import SPACING


def _cache(root: Path) -> CaseCache:
    return CaseCache(root / "cache", seg_family(SPACING, False))


def test_second_run_hits_and_a_changed_label_is_rebuilt(own_studies: Path, tmp_path: Path) -> None:
    specs = segmentation_cases(own_studies)
    refs, first = _cache(tmp_path).ensure(specs)
    assert (first.hits, first.built) == (0, 3) and len(refs) == 3
    refs2, second = _cache(tmp_path).ensure(specs)
    assert (second.hits, second.built) == (3, 0) and [r.path for r in refs2] == [r.path for r in refs]
    # a corrected label (as Slicer saves it) gets a new key; the old entry is dropped
    label_file = own_studies / "labels" / "final" / "case-01.nii.gz"
    label, affine = load_volume(label_file)
    label[label == 1] = 3
    save_label(label_file, label.astype(np.uint8), affine)
    refs3, third = _cache(tmp_path).ensure(segmentation_cases(own_studies))
    assert (third.hits, third.built) == (2, 1)
    changed = next(r for r in refs3 if r.spec.case_id == "case-01")
    assert changed.path != refs[1].path and not refs[1].path.exists()
    assert int((read_entry(changed.path, changed.key).arrays["label"] == 1).sum()) == 0
    assert third.folder_mb == pytest.approx(first.folder_mb, rel=0.05)  # one entry per case, size reported


def test_a_label_changed_during_a_run_is_never_trained_on_in_its_old_form(own_studies: Path, tmp_path: Path) -> None:
    store, report = open_store(_cache(tmp_path), segmentation_cases(own_studies), ram_budget_mb=1000)
    assert report.in_memory
    before = np.asarray(store.entry(0).arrays["label"]).copy()
    label_file = own_studies / "labels" / "final" / "case-00.nii.gz"
    label, affine = load_volume(label_file)
    save_label(label_file, np.zeros_like(label, dtype=np.uint8), affine)
    after = np.asarray(store.entry(0).arrays["label"])
    assert before.any() and not after.any()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_entry_is_rebuilt_not_trusted(studies: Path, tmp_path: Path, damage: str) -> None:
    specs = segmentation_cases(studies)
    cache = _cache(tmp_path)
    refs, _ = cache.ensure(specs)
    good = read_entry(refs[0].path, refs[0].key).arrays["image"].copy()
    data = bytearray(refs[0].path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-100] ^= 0xFF  # one payload byte: only the checksum can tell
    else:
        data = bytearray(b"not a cache file")
    refs[0].path.write_bytes(bytes(data))
    with pytest.raises(CacheCorrupt):
        read_entry(refs[0].path, refs[0].key)
    if damage == "flip":  # the size is right, so the cheap check passes: the read must catch it
        entry = cache.load(refs[0])
    else:
        refs, report = cache.ensure(specs)
        assert report.rebuilt == 1 and report.built == 1
        entry = cache.load(refs[0])
    assert np.array_equal(entry.arrays["image"], good)


def test_full_disk_is_a_clear_error_and_leaves_no_file(studies: Path, tmp_path: Path) -> None:
    spec = segmentation_cases(studies)[0]
    cache = _cache(tmp_path)
    key = cache.key(spec)
    target = cache.path(spec, key)
    temp_name(target).symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(CacheError, match=r"disk full while writing case case-00.*--cache-dir"):
        cache.build(spec, key)
    assert not target.exists() and not temp_name(target).exists() and not list(cache.dir.iterdir())


def test_a_killed_writer_leaves_nothing_a_later_run_reads(studies: Path, tmp_path: Path) -> None:
    spec = segmentation_cases(studies)[0]
    cache = _cache(tmp_path)
    key = cache.key(spec)
    target = cache.path(spec, key)
    # a writer process that dies (SIGKILL) half-way through its temporary file
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from brain_tumor_mri.training.cache_file import temp_name\n"
        "tmp = temp_name(Path(sys.argv[1]))\n"
        "with open(tmp, 'wb') as fp:\n"
        "    fp.write(b'BTCASE01' + b'x' * 1000)\n"
        "    fp.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert proc.returncode == -9
    leftovers = [p for p in cache.dir.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and not target.exists()
    refs, report = _cache(tmp_path).ensure([spec])  # the next run: orphan removed, entry built
    assert report.built == 1 and refs[0].path == target
    assert [p.name for p in cache.dir.iterdir()] == [target.name]
    assert read_entry(target, key).arrays["label"].any()


def test_ram_budget_decides_between_memory_and_disk(studies: Path, tmp_path: Path) -> None:
    specs = segmentation_cases(studies)
    in_ram, r1 = open_store(_cache(tmp_path), specs, ram_budget_mb=1000)
    on_disk, r2 = open_store(_cache(tmp_path), specs, ram_budget_mb=0)
    assert r1.in_memory and in_ram.memory is not None
    assert not r2.in_memory and on_disk.memory is None
    assert np.array_equal(in_ram.entry(2).arrays["image"], on_disk.entry(2).arrays["image"])
    assert os.path.getsize(on_disk.refs[2].path) == on_disk.refs[2].nbytes
