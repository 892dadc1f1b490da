"""``--studies`` as a DICOMweb URL: the conf keys, and a datastore that starts while the PACS is down."""

from __future__ import annotations

import pytest

from brain_tumor_mri.config import AppConfig, default_pacs_cache


def test_url_studies_use_a_cache_folder(tmp_path):
    cfg = AppConfig.from_conf({}, None, "https://pacs.example.org/dicom-web/")
    assert cfg.pacs_url == "https://pacs.example.org/dicom-web"
    assert cfg.studies == default_pacs_cache(cfg.pacs_url) and "pacs" in cfg.studies.parts
    cfg = AppConfig.from_conf({"pacs_cache": str(tmp_path / "c"), "pacs_timeout": "5"}, None, "http://h/dicom-web")
    assert cfg.studies == (tmp_path / "c").resolve() and cfg.pacs_timeout == 5.0
    assert AppConfig.from_conf({}, None, tmp_path).pacs_url is None, "a folder is not a PACS"


def test_credentials_in_the_url_are_refused():
    with pytest.raises(ValueError, match="MONAI_LABEL_DICOMWEB_USERNAME"):
        AppConfig.from_conf({}, None, "https://user:secret@pacs.example.org/dicom-web")


@pytest.mark.parametrize(
    "conf, match",
    [
        ({"dicom_sequence_map": "AX FLAIR=t9"}, r"dicom_sequence_map .*'t9' for 'AX FLAIR' is not one of"),
        ({"pacs_query": "StudyDate"}, r"entry 'StudyDate' is not KEYWORD=VALUE"),
        ({"pacs_timeout": "0"}, r"expected a value in \[1.0, 600.0\]"),
    ],
)
def test_bad_pacs_conf_fails_at_start(conf, match):
    with pytest.raises(ValueError, match=match):
        AppConfig.from_conf(conf, None, "http://h/dicom-web")


def test_qido_filters():
    cfg = AppConfig.from_conf({"pacs_query": "ModalitiesInStudy=MR, StudyDate=20240101-"}, None, "http://h/dicom-web")
    assert cfg.qido_filters() == {"ModalitiesInStudy": "MR", "StudyDate": "20240101-"}


def test_datastore_starts_while_the_pacs_is_down(tmp_path):
    from fastapi import HTTPException

    from brain_tumor_dev.orthanc import Orthanc
    from brain_tumor_mri.server.dicomweb_datastore import build_pacs_datastore

    down = Orthanc(tmp_path / "never-started")  # nothing listens on its port
    cfg = AppConfig.from_conf({"pacs_cache": str(tmp_path / "cache"), "pacs_timeout": "2"}, None, down.dicomweb_url)
    datastore = build_pacs_datastore(cfg, auto_reload=False)
    status = datastore.status()
    assert status["total"] == 0 and "cannot connect to the PACS at 127.0.0.1" in status["pacs"]["error"]
    with pytest.raises(HTTPException) as err:
        datastore.get_image_uri("1.2.826.0.1.3680043.8.498.1")
    assert err.value.status_code == 503 and "study 1.2.826.0.1.3680043.8.498.1" in str(err.value.detail)
