"""A short classification training run on a tiny 2D datastore, grouping, and the evaluate command."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from brain_tumor_mri.commands import classify
from brain_tumor_mri.networks.checkpoint import load_model
from brain_tumor_mri.training.class_augment import ClassAugment, augment_sample
from brain_tumor_mri.training.class_data import group_of, load_samples, split_by_group
from brain_tumor_mri.training.classification import ClassTrainSettings, train_classification
from tests.helpers.classification import TINY_2D, TINY_NET, make_2d_datastore


def test_group_of_prefers_source_case_then_strips_slice_suffix() -> None:
    assert group_of("glioma-BraTS-1_3", {"source_case": "BraTS-1"}) == "BraTS-1"
    assert group_of("glioma-BraTS-1_3", {}) == "glioma-BraTS-1"
    assert group_of("img7", {}) == "img7"


def test_split_keeps_groups_together(tmp_path: Path) -> None:
    samples = load_samples(make_2d_datastore(tmp_path / "studies"), TINY_2D)
    assert len(samples) == 24 and samples[0].image.shape == (1, 32, 32)
    train, val = split_by_group(samples, 0.34, seed=1)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert {s.label for s in val} == {0, 1, 2, 3}  # stratified: one group per class
    assert split_by_group(samples, 0.34, seed=1) == (train, val)  # seeded


def test_augment_keeps_shape_and_is_seeded() -> None:
    x = torch.randn(1, 32, 32)
    a = augment_sample(x, torch.Generator().manual_seed(0), ClassAugment())
    b = augment_sample(x, torch.Generator().manual_seed(0), ClassAugment())
    assert a.shape == x.shape and torch.equal(a, b)
    vol = torch.zeros(4, 16, 16, 16)
    vol[:, 4:12, 4:12, 4:12] = 1.0
    out = augment_sample(vol, torch.Generator().manual_seed(1), ClassAugment(affine_prob=0.0))
    assert out.shape == vol.shape and float(out[:, 0, 0, 0].abs().sum()) == 0.0


def test_short_run_publishes_and_evaluate_writes_model_card_files(tmp_path: Path) -> None:
    studies = make_2d_datastore(tmp_path / "studies", per_class=2)
    train, val = split_by_group(load_samples(studies, TINY_2D), 0.5, seed=0)
    settings = ClassTrainSettings(input_kind="2d", epochs=2, batch_size=4, lr=3e-3, device="cpu", bf16="off",
                                  network=dict(TINY_NET), preprocess=TINY_2D)  # fmt: skip
    out = tmp_path / "weights" / "classification_2d.pt"
    result = train_classification(settings, train, val, None, out, tmp_path / "run")
    assert result.published and result.epochs_run == 2 and out.is_file()
    meta = load_model(out, "classification").meta
    assert meta["input_kind"] == "2d" and meta["input_size"] == 32 and meta["classes"][0] == "glioma"
    assert (tmp_path / "run" / "curves.png").is_file() and any((tmp_path / "run" / "tb").iterdir())
    with open(tmp_path / "run" / "metrics.csv", encoding="utf-8") as fp:
        assert len(list(csv.DictReader(fp))) == 2
    version = meta["version"]
    stopped = train_classification(settings, train, val, out, out, tmp_path / "run2", should_stop=lambda: True)
    assert not stopped.published and load_model(out, "classification").meta["version"] == version
    args = argparse.Namespace(evaluate=studies, out=tmp_path / "card", kind="2d", timing_runs=1,
                              weights_dir=out.parent, device="cpu", bf16="off", inputs=[])  # fmt: skip
    assert classify.run(args) == 0
    metrics = json.loads((tmp_path / "card" / "classification_2d_metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 16 and metrics["timing"]["runs"] == 1
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "metrics.md", "predictions.csv"):
        assert (tmp_path / "card" / f"classification_2d_{name}").is_file()


def test_not_published_when_not_better_than_initial(tmp_path: Path) -> None:
    from brain_tumor_mri.training import classification as tc

    result = tc.TrainResult("finished", False, "", None, None, 1, 1, 0.5, 0.75, {}, 1.0)
    best = tc._Best(key=(0.5, -1.0), epoch=1, state={})
    baseline = {"balanced_accuracy": 0.75, "loss": 0.9}
    out = tmp_path / "m.pt"
    tc._publish(result, ClassTrainSettings(), {}, TINY_2D, best, baseline, ({}, {}), out)
    assert not result.published and "does not beat the initial model" in result.decision and not out.exists()
