"""The PACS cache against a real Orthanc: what a fetch writes, what a bad study leaves (nothing), faults."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

from brain_tumor_dev.dicom_studies import BAD_VARIANTS, as_standard_axial, write_case_study
from brain_tumor_dev.orthanc import Orthanc
from brain_tumor_mri.dicom.cache import STAGING_DIR, StudyCache
from brain_tumor_mri.dicom.client import PacsClient, PacsSettings, PacsUnavailable
from brain_tumor_mri.imageio import InputError, load_sequences
from brain_tumor_mri.layout import CASE_META, resolve_case

USERS = {"annotator": "s3cret"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, small_case):
    """A real Orthanc with basic auth holding a good study, each bad variant and a CT-only study."""
    root = tmp_path_factory.mktemp("pacs")
    orthanc = Orthanc(root / "orthanc", users=USERS).start()
    studies = {}
    try:
        for variant in ("good", "good2", *BAD_VARIANTS, "ct_only"):
            kind = "good" if variant == "good2" else variant
            studies[variant] = write_case_study(
                small_case.sequences, small_case.affine, root / "dicom" / variant, f"P-{variant}", kind
            )
            orthanc.upload(studies[variant].all_files())
        yield orthanc, studies
    finally:
        orthanc.stop()


def _cache(orthanc, tmp_path, timeout=10.0, password="s3cret") -> StudyCache:
    client = PacsClient(PacsSettings(orthanc.dicomweb_url, "annotator", password, timeout_s=timeout))
    return StudyCache(tmp_path / "cache", client, max_voxels=64_000_000)


def test_lists_the_mr_studies_only(pacs, tmp_path):
    orthanc, studies = pacs
    listed = {s.uid for s in _cache(orthanc, tmp_path).list_studies()}
    assert listed == {w.study_uid for v, w in studies.items() if v != "ct_only"}


def test_fetch_writes_a_case_laid_out_like_a_datastore(pacs, tmp_path, small_case):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path)
    uid = studies["good"].study_uid
    flair = cache.fetch(uid)
    assert flair == tmp_path / "cache" / f"{uid}.nii.gz" and cache.is_cached(uid)
    case = resolve_case(flair)
    assert case.missing == []
    meta = json.loads((tmp_path / "cache" / "cases" / uid / CASE_META).read_text())
    assert meta["kind"] == "3d" and meta["source"] == "dicomweb"
    assert {k: v["uid"] for k, v in meta["pacs"]["series"].items()} == studies["good"].series_uids
    assert meta["pacs"]["patient_id"] == "P-good"
    stack, affine, _ = load_sequences(case.sequences)
    want, want_affine = as_standard_axial(small_case.sequences["t2f"], small_case.affine)
    assert np.allclose(affine, want_affine, atol=1e-4) and np.allclose(stack[3], want, atol=1e-3)
    headers = cache.source_headers(uid)
    assert [str(h.SOPInstanceUID) for h in headers] and "PixelData" not in headers[0]
    assert not list((cache.work / STAGING_DIR).iterdir())


def test_a_cached_study_needs_no_pacs(pacs, tmp_path):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path, timeout=2.0)
    uid = studies["good"].study_uid
    cache.fetch(uid)
    orthanc.pause()
    try:
        t0 = time.monotonic()
        assert cache.fetch(uid).is_file()
        assert time.monotonic() - t0 < 1.0
    finally:
        orthanc.resume()


@pytest.mark.parametrize(
    "variant, message",
    [
        ("missing_sequence", "no series recognised as T2 (t2w)"),
        ("two_flair", "2 candidate series for FLAIR (t2f)"),
        ("flair_not_mr", "not used (modality CT, not MR)"),
        ("other_grid", "shape (60, 60, 20) differs from"),
        ("unreadable_instance", "cannot be read"),
    ],
)
def test_bad_study_names_study_and_series_and_leaves_nothing(pacs, tmp_path, variant, message):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path)
    study = studies[variant]
    with pytest.raises(InputError) as err:
        cache.fetch(study.study_uid)
    text = str(err.value)
    assert text.startswith(f"study {study.study_uid}") and message in text
    named = {"missing_sequence": "t2f", "two_flair": "t2f_repeat", "flair_not_mr": "t2f", "other_grid": "t1c"}
    named["unreadable_instance"] = "t2w"
    assert study.series_uids[named[variant]] in text, "the message names the series at fault"
    root = tmp_path / "cache"
    assert not cache.is_cached(study.study_uid)
    assert not (root / "cases" / study.study_uid).exists()
    assert not list((cache.work / STAGING_DIR).iterdir())


def test_concurrent_fetches_of_one_study_convert_it_once(pacs, tmp_path, caplog):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path)
    uid = studies["good2"].study_uid
    results, errors = [], []

    def fetch():
        try:
            results.append(cache.fetch(uid))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="brain_tumor_mri.dicom.cache"):
        threads = [threading.Thread(target=fetch) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert sum("cached:" in r.getMessage() for r in caplog.records) == 1


def test_leftovers_of_a_killed_fetch_are_cleaned(pacs, tmp_path):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path)
    uid = studies["good"].study_uid
    (cache.work / STAGING_DIR / f"{uid}-dead").mkdir()
    stale = tmp_path / "cache" / "cases" / uid
    stale.mkdir(parents=True)
    (stale / "t1n.nii.gz").write_bytes(b"half a file")
    assert cache.clean_staging() == 1
    assert not cache.is_cached(uid), "a case folder without its FLAIR is not a cached case"
    cache.fetch(uid)
    assert resolve_case(cache.flair_path(uid)).missing == []
    assert (stale / "t1n.nii.gz").stat().st_size > 100


def test_wrong_credentials(pacs, tmp_path):
    orthanc, _ = pacs
    with pytest.raises(PacsUnavailable, match=r"refused the credentials \(HTTP 401\)"):
        _cache(orthanc, tmp_path, password="wrong").list_studies()


def test_slow_pacs_times_out(pacs, tmp_path):
    orthanc, studies = pacs
    cache = _cache(orthanc, tmp_path, timeout=1.5)
    orthanc.pause()
    try:
        with pytest.raises(PacsUnavailable, match="did not answer within 1.5 s"):
            cache.fetch(studies["good"].study_uid)
    finally:
        orthanc.resume()
    assert not cache.is_cached(studies["good"].study_uid)


def test_pacs_down(tmp_path):
    orthanc = Orthanc(tmp_path / "down")  # configured, never started: nothing listens on its port
    client = PacsClient(PacsSettings(orthanc.dicomweb_url, timeout_s=2))
    with pytest.raises(PacsUnavailable, match="cannot connect to the PACS at 127.0.0.1"):
        StudyCache(tmp_path / "cache", client).fetch("1.2.3.4")
