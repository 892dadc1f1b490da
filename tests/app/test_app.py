"""The app in-process: MONAI Label builds it from ``apps/brain_tumor/main.py`` as the server does.

Faster than the server tier and closer to the wiring: ``info()`` shows what Slicer reads,
``infer()`` runs the real task on a sample case, and ``--conf`` values reach the tasks.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from brain_tumor_dev.server_process import APP, copy_studies
from brain_tumor_mri.imageio import load_volume
from brain_tumor_mri.labels import SEG_LABELS, TUMOR_CLASSES


def _load_app_class():
    spec = importlib.util.spec_from_file_location("brain_tumor_app_main", APP / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BrainTumorApp


@pytest.fixture(scope="module")
def app(imported_studies, tmp_path_factory):
    studies = copy_studies(imported_studies, tmp_path_factory.mktemp("app") / "studies")
    return _load_app_class()(str(APP), str(studies), {"models": "all", "seed": "7", "train_epochs": "3"})


def test_info_is_what_slicer_reads(app):
    info = app.info()
    assert "config" not in info  # a top-level config key makes Slicer ask for a server upgrade
    seg = info["models"]["segmentation"]
    assert seg["type"] == "segmentation" and seg["dimension"] == 3 and seg["labels"] == SEG_LABELS
    assert info["models"]["classification"]["labels"] == list(TUMOR_CLASSES)
    assert {"segmentation", "classification"} <= set(info["trainers"])
    assert {"first", "random", "epistemic", "tta"} <= set(info["strategies"])


def test_conf_reaches_the_tasks(app):
    assert app.cfg.seed == 7 and app.cfg.train_epochs == 3
    assert app.info()["trainers"]["segmentation"]["config"]["max_epochs"] == 3


def test_infer_segments_a_case_on_its_own_grid(app):
    case_id = sorted(app.datastore().list_images())[0]
    result = app.infer({"model": "segmentation", "image": case_id})
    try:
        label, affine = load_volume(result["file"])
    finally:  # the server's endpoint removes the answer file after sending it; called directly, the caller does
        Path(result["file"]).unlink()
    params = result["params"]
    image, image_affine = load_volume(app.datastore().get_image_uri(case_id))
    assert label.shape == image.shape and np.allclose(affine, image_affine, atol=1e-4)
    assert set(np.unique(label).astype(int)) <= {0, *SEG_LABELS.values()}
    assert params["label_names"] == SEG_LABELS and params["case_id"] == case_id
    json.dumps(params)  # the params travel as JSON to Slicer


def test_unknown_conf_key_stops_the_app(imported_studies, tmp_path):
    studies = copy_studies(imported_studies, tmp_path / "studies")
    with pytest.raises(ValueError, match="unknown --conf key"):
        _load_app_class()(str(APP), str(studies), {"no_such_key": "1"})


def test_app_module_is_thin():
    lines = [ln for ln in Path(APP / "main.py").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) < 90
