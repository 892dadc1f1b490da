"""A real server on a real PACS: ``--studies http://.../dicom-web`` against Orthanc, driven like Slicer.

Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) runs on a free loopback port with basic
authentication and holds DICOM studies written from sample cases: three good four-sequence
studies, one study per fault the server must refuse, and a CT-only study. The server gets
the credentials from the environment, as a hospital deployment would.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from brain_tumor_dev.dicom_studies import BAD_VARIANTS, as_standard_axial, read_brats_case, write_case_study
from brain_tumor_dev.orthanc import Orthanc
from brain_tumor_mri.dicom.cache import read_source_headers
from brain_tumor_mri.dicom.seg import read_segmentation
from brain_tumor_mri.dicom.sr import report_volumes
from brain_tumor_mri.imageio import load_volume, save_label
from brain_tumor_mri.imageio_seg import read_segment_metadata
from brain_tumor_mri.inference.measure import tumor_measurements

from .conftest import wait_training
from .harness import REPO, Server

pytestmark = pytest.mark.server

USER, PASSWORD = "radiology", "pacs-s3cret"
SLICER_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8"}
DISPLAY_NAMES = {
    "label_info": [{"name": n, "idx": i} for i, n in enumerate(["Necrotic core", "Edema", "Enhancing tumour"], 1)]
}
GOOD = {
    "glioma_a": ("BraTS-SYN-00001-000", 1),
    "glioma_b": ("BraTS-SYN-00004-000", 1),
    "spare": ("BraTS-SYN-00002-000", 2),
}
SEG_CODES = {"Necrotic core": ("SCT", "6574001"), "Edema": ("SCT", "79654002"), "Enhancing tumour": ("NCIt", "C113842")}


class Pacs:
    """The Orthanc, the studies written into it, and their ground truth on the stored grid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.orthanc = Orthanc(root / "orthanc", users={USER: PASSWORD})
        self.studies: dict = {}
        self.truth: dict[str, np.ndarray] = {}

    def add(self, name: str, case_id: str, step: int, variant: str = "good") -> str:
        sequences, seg, affine = read_brats_case(REPO / "sample-data" / "brats" / case_id, step=step)
        written = write_case_study(sequences, affine, self.root / "dicom" / name, f"PAT-{name}", variant)
        self.orthanc.upload(written.all_files())
        self.studies[name] = written
        self.truth[name] = as_standard_axial(seg, affine)[0]
        return written.study_uid

    def uid(self, name: str) -> str:
        return self.studies[name].study_uid

    def modalities(self, name: str) -> list[str]:
        return sorted(s["00080060"]["Value"][0] for s in self.orthanc.series_of_study(self.uid(name)))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    p = Pacs(tmp_path_factory.mktemp("pacs"))
    p.orthanc.start()
    try:
        for name, (case_id, step) in GOOD.items():
            p.add(name, case_id, step)
        for variant in (*BAD_VARIANTS, "ct_only"):
            p.add(variant, "BraTS-SYN-00001-000", 2, variant)
        yield p
    finally:
        p.orthanc.stop()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random U-Net (3 mm), so the retraining test takes seconds, not minutes, on 2 cores.

    Segmentation quality is the shipped model's business (test_segmentation_server); here the
    point is that PACS cases flow through inference, labels and training like folder cases.
    """
    import torch

    from brain_tumor_mri.networks.checkpoint import save_model
    from brain_tumor_mri.networks.factory import build_segmentation_network
    from tests.helpers.activelearning import TINY_NETWORK, segmentation_meta

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    save_model(
        build_segmentation_network(**TINY_NETWORK), folder / "segmentation.pt", segmentation_meta(TINY_NETWORK, 3.0)
    )
    return folder


@pytest.fixture(scope="module")
def srv(pacs, tiny_weights, tmp_path_factory):
    cache = tmp_path_factory.mktemp("server") / "cache"
    conf = {"models": "segmentation", "pacs_cache": str(cache), "pacs_timeout": "3", "pacs_refresh_s": "1"}
    env = {
        "MONAI_LABEL_DICOMWEB_USERNAME": USER,
        "MONAI_LABEL_DICOMWEB_PASSWORD": PASSWORD,
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    }
    server = Server(cache, conf, env=env, weights_dir=tiny_weights, studies_arg=pacs.orthanc.dicomweb_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _infer(srv, image, params=None):
    return requests.post(
        f"{srv.url}/infer/segmentation", params={"image": image}, data={"params": json.dumps(params or {})}, timeout=120
    )


def _cache_files(srv, uid) -> list[Path]:
    return [p for p in srv.studies.rglob("*") if uid in str(p)]


def test_cases_are_studies_not_series(srv, pacs):
    mr_studies = {w.study_uid for name, w in pacs.studies.items() if name != "ct_only"}
    objects = srv.client.datastore()["objects"]
    assert set(objects) == mr_studies
    status = srv.client.info()["datastore"]
    assert status["total"] == len(mr_studies) and status["pacs"]["error"] is None
    series = {uid for w in pacs.studies.values() for uid in w.series_uids.values()}
    assert not series & set(objects), "a series was listed as a case"


def test_next_sample_serves_good_studies_and_skips_bad_ones(srv, pacs):
    served = []
    for _ in range(len(pacs.studies) + 1):
        sample = srv.client.next_sample("first", {})
        if not sample:
            break
        served.append(sample["id"])
        assert Path(sample["path"]).is_file(), "Next Sample hands out a case already fetched"
    assert sorted(served) == sorted(pacs.uid(n) for n in GOOD)
    rejected = srv.client.info()["datastore"]["pacs"]["rejected"]
    tried = {pacs.uid(v) for v in BAD_VARIANTS} & set(rejected)
    assert tried, "Next Sample met no bad study"
    for uid in tried:
        assert rejected[uid].startswith(f"study {uid}")


def test_segment_a_pacs_case(srv, pacs):
    uid = pacs.uid("glioma_a")
    label_file, params = srv.client.infer("segmentation", uid, SLICER_PARAMS)
    label, affine = load_volume(label_file)
    flair, flair_affine = load_volume(srv.studies / f"{uid}.nii.gz")
    assert label.shape == flair.shape and np.allclose(affine, flair_affine, atol=1e-4)
    assert set(np.unique(label).astype(int)) <= {0, 1, 2, 3}
    assert [s["Name"] for s in read_segment_metadata(label_file)] == ["Necrotic core", "Edema", "Enhancing tumour"]
    assert params["case_id"] == uid and params["missing_sequences"] == []
    assert params["volumes_ml"] == pytest.approx(
        tumor_measurements(label.astype(np.uint8), affine)["volumes_ml"], abs=2e-3
    )
    # the case the server segments is the sample case, voxel for voxel, in the same place
    sequences, _, case_affine = read_brats_case(REPO / "sample-data" / "brats" / GOOD["glioma_a"][0])
    want, want_affine = as_standard_axial(sequences["t2f"], case_affine)
    assert np.allclose(flair_affine, want_affine, atol=1e-4) and np.array_equal(flair, want)


def test_infer_answers_as_slicer_segmentation_and_as_dicom_seg(srv, pacs):
    uid = pacs.uid("glioma_a")
    seg_nrrd, _ = srv.client.infer("segmentation", uid, {"result_extension": ".seg.nrrd"})
    assert str(seg_nrrd).endswith(".seg.nrrd")
    assert read_segment_metadata(seg_nrrd)[2]["Tags"].startswith("TerminologyEntry:")
    dcm, params = srv.client.infer("segmentation", uid, {"result_extension": ".dcm"})
    seg = pydicom.dcmread(dcm)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs.studies["glioma_a"].series_uids["t2f"]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == params["model_version"]
    label, _ = load_volume(srv.client.infer("segmentation", uid, {})[0])
    assert np.array_equal(read_segmentation(seg, read_source_headers(srv.studies / "cases" / uid)), label)


def _save_truth(srv, pacs, name, tmp_path) -> np.ndarray:
    """Save the ground truth as a corrected label the way Slicer does (NRRD + segment names)."""
    uid = pacs.uid(name)
    _, affine = load_volume(srv.studies / f"{uid}.nii.gz")
    corrected = save_label(tmp_path / f"{name}.nrrd", pacs.truth[name].astype(np.uint8), affine)
    srv.client.save_label(uid, str(corrected), tag="final", params=DISPLAY_NAMES)
    return affine


def _pacs_object(pacs, name, modality, sop_uid) -> pydicom.Dataset:
    """The instance ``sop_uid`` (a ``modality`` series) of a study, read back from Orthanc."""
    uid = pacs.uid(name)
    for s in pacs.orthanc.series_of_study(uid):
        if s["00080060"]["Value"][0] != modality:
            continue
        for raw in pacs.orthanc.instances_of_series(uid, s["0020000E"]["Value"][0]):
            ds = pydicom.dcmread(io.BytesIO(raw))
            if ds.SOPInstanceUID == sop_uid:
                return ds
    raise AssertionError(f"{modality} {sop_uid} not in study {uid} on the PACS")


def test_saved_label_goes_to_the_pacs_as_seg_and_volume_report(srv, pacs, tmp_path):
    uid = pacs.uid("glioma_a")
    affine = _save_truth(srv, pacs, "glioma_a", tmp_path)
    truth = pacs.truth["glioma_a"]
    stored = srv.client.datastore()["objects"][uid]["labels"]["final"]["info"]["pacs"]
    seg = _pacs_object(pacs, "glioma_a", "SEG", stored["seg_sop_instance_uid"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs.studies["glioma_a"].series_uids["t2f"]
    assert {
        s.SegmentLabel: (
            s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
            s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
        )
        for s in seg.SegmentSequence
    } == SEG_CODES
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert np.array_equal(read_segmentation(seg, read_source_headers(srv.studies / "cases" / uid)), truth)
    sr = _pacs_object(pacs, "glioma_a", "SR", stored["sr_sop_instance_uid"])
    want = tumor_measurements(truth, affine)["volumes_ml"]
    got = report_volumes(sr)
    assert got["Edema"] == pytest.approx(want["edema"], abs=2e-3)
    assert got["Whole tumour"] == pytest.approx(want["whole_tumor"], abs=2e-3)
    local, _ = load_volume(srv.studies / "labels" / "final" / f"{uid}.nii.gz")
    assert np.array_equal(local, truth), "the label is kept locally for training"


def test_retrain_on_pacs_cases(srv, pacs, tmp_path):
    for name in ("glioma_a", "glioma_b"):
        _save_truth(srv, pacs, name, tmp_path)
    srv.client.train_start("segmentation", {"max_epochs": 1})
    task = wait_training(srv)
    assert task["status"] == "DONE", json.dumps(task, default=str)[:2000]
    # the two PACS cases labelled above are the only labelled cases in the cache
    assert any("training on 1 cases, validating on 1" in line for line in task["details"]), task["details"][-20:]
    assert list((srv.studies / "model" / "runs").glob("segmentation-*/result.json"))


@pytest.mark.parametrize("variant", BAD_VARIANTS)
def test_bad_study_is_refused_naming_study_and_series(srv, pacs, variant):
    uid = pacs.uid(variant)
    before = pacs.modalities(variant)
    for response in (
        _infer(srv, uid, SLICER_PARAMS),
        requests.get(f"{srv.url}/datastore/image", params={"image": uid}, timeout=60),
    ):
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert f"study {uid}" in detail
        assert any(s in detail for s in pacs.studies[variant].series_uids.values()), detail
    assert not _cache_files(srv, uid), "nothing of a refused study is kept"
    assert pacs.modalities(variant) == before, "nothing was written to the PACS"
    assert srv.alive()


def test_non_mr_study_is_not_a_case(srv, pacs):
    response = _infer(srv, pacs.uid("ct_only"))
    assert response.status_code == 404, response.text


def _wait_listed(srv, uid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while uid not in srv.client.datastore()["objects"]:
        assert time.monotonic() < deadline, f"study {uid} never listed"
        time.sleep(0.5)


def test_pacs_down(srv, pacs, tmp_path):
    new = pacs.add("late", "BraTS-SYN-00006-000", 2)
    _wait_listed(srv, new)
    cached = pacs.uid("glioma_b")
    label_path = srv.studies / "labels" / "final" / f"{cached}.nii.gz"
    label_before = label_path.read_bytes()
    series_before = pacs.modalities("glioma_b")
    pacs.orthanc.stop()
    try:
        response = _infer(srv, new)
        assert response.status_code == 503, response.text
        assert f"study {new}" in response.json()["detail"] and "cannot connect" in response.json()["detail"]
        assert not _cache_files(srv, new)
        assert _infer(srv, cached).status_code == 200, "cached cases keep working without the PACS"
        corrected = save_label(tmp_path / "c.nrrd", pacs.truth["glioma_b"], load_volume(label_path)[1])
        r = requests.put(
            f"{srv.url}/datastore/label",
            params={"image": cached, "tag": "final"},
            files={"label": ("c.nrrd", corrected.read_bytes())},
            data={"params": json.dumps(DISPLAY_NAMES)},
            timeout=60,
        )
        assert r.status_code == 503 and f"study {cached}" in r.json()["detail"], r.text
        assert label_path.read_bytes() == label_before, "no local label without the PACS copy"
    finally:
        pacs.orthanc.start()
    assert pacs.modalities("glioma_b") == series_before, "nothing half-written to the PACS"
    assert _infer(srv, new).status_code == 200, "the study is served once the PACS is back"


def test_slow_pacs(srv, pacs):
    new = pacs.add("slow", "BraTS-SYN-00005-000", 2)
    _wait_listed(srv, new)
    pacs.orthanc.pause()
    try:
        t0 = time.monotonic()
        response = _infer(srv, new)
        assert response.status_code == 503, response.text
        assert "did not answer within 3 s" in response.json()["detail"]
        assert time.monotonic() - t0 < 30
        t0 = time.monotonic()
        assert srv.client.info()["models"]["segmentation"]
        assert time.monotonic() - t0 < 3, "/info does not wait for the PACS"
        assert not _cache_files(srv, new)
    finally:
        pacs.orthanc.resume()
    assert _infer(srv, new).status_code == 200
