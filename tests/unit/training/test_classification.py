"""Classification runs on the same engine: grouping, streaming, publishing, stopping, two ranks."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from brain_tumor_mri.commands import classify
from brain_tumor_mri.networks.checkpoint import load_model
from brain_tumor_mri.training.cases import classification_cases, split_by_group
from brain_tumor_mri.training.class_data import group_of
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.run import run_training
from tests.helpers.classification import TINY_NET, make_2d_datastore


def _opts(studies: Path, tmp: Path, **kw) -> TrainOptions:
    base = dict(model="classification", studies=studies, weights_dir=tmp / "no-shipped", init="none",
                out=tmp / "weights", run_dir=tmp / "run", cache_dir=tmp / "cache", kinds=("2d",), epochs=2,
                batch_size=4, lr=3e-3, device="cpu", bf16="off", network=dict(TINY_NET), input_size=32, workers=0,
                val_fraction=0.5, seed=0)  # fmt: skip
    return TrainOptions(**{**base, **kw})


def test_group_of_prefers_source_case_then_strips_slice_suffix() -> None:
    assert group_of("glioma-BraTS-1_3", {"source_case": "BraTS-1"}) == "BraTS-1"
    assert group_of("glioma-BraTS-1_3", {}) == "glioma-BraTS-1"
    assert group_of("img7", {}) == "img7"


def test_split_keeps_groups_together(tmp_path: Path) -> None:
    specs = classification_cases(make_2d_datastore(tmp_path / "studies"), "2d")
    assert len(specs) == 24 and specs[0].file("image") is not None
    train, val = split_by_group(specs, 0.34, seed=1)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert {s.target for s in val} == {0, 1, 2, 3}  # stratified: one group per class
    assert split_by_group(specs, 0.34, seed=1) == (train, val)  # seeded


def test_short_run_publishes_and_evaluate_writes_model_card_files(tmp_path: Path) -> None:
    studies = make_2d_datastore(tmp_path / "studies", per_class=2)
    result = run_training(_opts(studies, tmp_path))
    part = result.parts["2d"]
    assert result.published and part["epochs_run"] == 2 and part["cache"]["built"] == 16
    out = tmp_path / "weights" / "classification_2d.pt"
    # one kind trained: the combined result names its best epoch and where it was published
    assert result.best_epoch == part["best_epoch"] and result.publish_path == part["publish_path"] == str(out)
    meta = load_model(out, "classification").meta
    assert meta["input_kind"] == "2d" and meta["input_size"] == 32 and meta["classes"][0] == "glioma"
    assert meta["training"]["decision_basis"]["selection"] == "balanced accuracy"
    # the engine calibrated what it published, on exactly this run's validation cases
    cal = meta["calibration"]
    assert cal["fitted_on"]["split"] == "val" and cal["fitted_on"]["n"] == len(meta["training"]["val_cases"]) > 0
    assert cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-9
    assert meta["version"].startswith(cal["base_version"] + "-cal") and part["version"] == meta["version"]
    run = tmp_path / "run" / "2d"
    assert (run / "curves.png").is_file() and any((run / "tb").iterdir())
    with open(run / "metrics.csv", encoding="utf-8") as fp:
        rows = list(csv.DictReader(fp))
    assert len(rows) == 2 and {"val_balanced_accuracy", "data_s", "step_s"} <= set(rows[0])
    saved = json.loads((tmp_path / "run" / "result.json").read_text(encoding="utf-8"))
    assert saved["published"] and saved["best_metric"] == pytest.approx(part["best_metric"])
    version = meta["version"]
    fine_tune = _opts(studies, tmp_path, init=str(out), input_size=None, run_dir=tmp_path / "run2")
    stopped = run_training(fine_tune, lambda: True)
    assert stopped.status == "stopped" and not stopped.published
    assert load_model(out, "classification").meta["version"] == version
    args = argparse.Namespace(evaluate=studies, out=tmp_path / "card", kind="2d", timing_runs=1,
                              weights_dir=out.parent, device="cpu", bf16="off", inputs=[])  # fmt: skip
    assert classify.run(args) == 0
    metrics = json.loads((tmp_path / "card" / "classification_2d_metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 16


def test_classification_trains_on_two_gloo_ranks(tmp_path: Path) -> None:
    """The multi-process path classification lacked: two CPU ranks via ``nproc``, rank 0 publishes."""
    studies = make_2d_datastore(tmp_path / "studies", per_class=2)
    result = run_training(_opts(studies, tmp_path, nproc=2, epochs=1, batch_size=2))
    assert result.published, result.decision
    meta = load_model(tmp_path / "weights" / "classification_2d.pt", "classification").meta
    assert meta["training"]["world_size"] == 2
