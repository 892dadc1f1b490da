"""Segmentation runs on the engine: publish and log, time budget, publish decision, stop, CLI, init spacing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from brain_tumor_mri.imageio import InputError, save_label
from brain_tumor_mri.networks.checkpoint import load_model, save_model
from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.training.cases import segmentation_cases, split_ids, split_segmentation
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.run import run_training
from tests.helpers.segmentation import SMALL_NET, SPACING


def _opts(studies: Path, tmp: Path, **kw) -> TrainOptions:
    base = dict(model="segmentation", studies=studies, weights_dir=tmp / "no-shipped", init="none",
                out=tmp / "model" / "segmentation.pt", run_dir=tmp / "run", cache_dir=tmp / "cache", epochs=2,
                lr=3e-3, batch_size=2, samples_per_epoch=4, device="cpu", bf16="off", spacing=SPACING, patch=32,
                network=SMALL_NET, workers=0, val_fraction=0.34, seed=1, domain_random=0.0)  # fmt: skip
    return TrainOptions(**{**base, **kw})


def _tiny_weights(path: Path, spacing: float | None = SPACING) -> Path:
    meta = {"kind": "segmentation", "network": SMALL_NET}
    if spacing is not None:
        meta["spacing"] = spacing
    save_model(build_segmentation_network(**SMALL_NET), path, meta)
    return path


def test_cases_and_split(studies: Path) -> None:
    specs = segmentation_cases(studies)
    assert [s.case_id for s in specs] == ["case-00", "case-01", "case-02"]
    assert {r for r, _ in specs[0].files} == {"t1n", "t1c", "t2w", "t2f", "label"}
    train, val = split_segmentation(specs, 0.34, 1)
    assert len(train) == 2 and len(val) == 1
    assert split_ids(["a", "b", "c", "d"], 0.25, 5) == split_ids(["d", "c", "b", "a"], 0.25, 5)
    assert split_ids(["a", "b"], 0.01, 0)[1] != []  # at least one validation case


def test_two_epoch_run_publishes_and_logs(studies: Path, tmp_path: Path) -> None:
    opts = _opts(studies, tmp_path, domain_random=1.0)
    old = _tiny_weights(opts.out)
    old_version = load_model(old, "segmentation").version
    seen: list[dict] = []
    result = run_training(opts, progress=seen.append)
    assert result.status == "finished" and result.published, result.decision
    loaded = load_model(opts.out, "segmentation")
    assert loaded.version == result.version != old_version
    assert next(loaded.network.parameters()).dtype == torch.float32 and loaded.meta["storage_dtype"] == "float16"
    meta = loaded.meta
    assert meta["spacing"] == SPACING and meta["patch"] == [32, 32, 32]
    assert meta["inferer"] == {"mode": "auto", "roi": [32, 32, 32], "overlap": 0.5, "blend": "gaussian"}
    assert meta["training"]["n_train"] == 2 and meta["training"]["val_cases"] == ["case-01"]
    assert meta["training"]["options"]["domain_random"] == 1.0 and "--spacing 3.0" in meta["training"]["command"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and 0 <= float(rows[-1]["val_mean"]) <= 1
    assert all(float(r["step_s"]) > 0 and float(r["data_s"]) >= 0 for r in rows)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000 and any((tmp_path / "run" / "tb").iterdir())
    assert [s["epoch"] for s in seen] == [1, 2] and "val_wt" in seen[0]
    saved = json.loads((tmp_path / "run" / "result.json").read_text(encoding="utf-8"))
    assert saved["decision_basis"]["rule"] == "beats_initial" and saved["decision_basis"]["n_val"] == 1
    assert set(saved["validation"]["trained"]) == {"case-01"} and saved["timings"]["first_step_s"] > 0
    assert saved["cache"]["built"] == 3 and saved["cache"]["in_memory"]


def test_time_budget_ends_the_run_and_still_publishes(studies: Path, tmp_path: Path) -> None:
    result = run_training(_opts(studies, tmp_path, epochs=5, max_minutes=1e-5))
    assert result.status == "time_limit" and result.epochs_run == 1 and result.published


def test_fine_tune_without_improvement_is_not_published(studies: Path, tmp_path: Path) -> None:
    init = _tiny_weights(tmp_path / "init.pt")
    result = run_training(_opts(studies, tmp_path, init=str(init), epochs=1, lr=1e-12))
    assert result.baseline_metric is not None and result.best_metric == pytest.approx(result.baseline_metric, abs=1e-6)
    assert not result.published and "does not beat the initial model" in result.decision
    assert not (tmp_path / "model" / "segmentation.pt").exists()
    assert result.decision_basis["initial"]["mean"] == pytest.approx(result.baseline_metric, abs=1e-4)
    assert set(result.validation["initial"]) == set(result.validation["trained"]) == {"case-01"}


def test_custom_publish_rule_decides(studies: Path, tmp_path: Path) -> None:
    from brain_tumor_mri.training.publish import Decision

    seen = []

    def never(inp):
        seen.append(inp)
        return Decision(False, "not published: site rule", {"rule": "never"})

    result = run_training(_opts(studies, tmp_path, epochs=1), publish_rule=never)
    assert not result.published and result.decision == "not published: site rule"
    assert seen[0].initial is None and set(seen[0].trained.per_case) == {"case-01"}


def test_stop_request_leaves_published_file_untouched(studies: Path, tmp_path: Path) -> None:
    opts = _opts(studies, tmp_path)
    out = _tiny_weights(opts.out)
    before = (out.read_bytes(), out.with_suffix(".json").read_bytes())
    calls = iter(range(1000))
    result = run_training(opts.replace(init=str(out)), should_stop=lambda: next(calls) >= 1)
    assert result.status == "stopped" and not result.published and result.epochs_run == 0
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before


def test_fine_tuning_keeps_the_initial_models_spacing(studies: Path, tmp_path: Path) -> None:
    init = _tiny_weights(tmp_path / "init.pt", spacing=4.0)
    result = run_training(_opts(studies, tmp_path, init=str(init), epochs=1, lr=3e-2))
    assert "/seg-4mm-" in result.cache["folder"]
    from brain_tumor_mri.cli import main

    argv = ["train", "segmentation", str(studies), "--init", str(init), "--spacing", "2"]
    assert main(argv) == 2  # --spacing is for training from scratch only


def test_unreadable_label_names_the_case(own_studies: Path, tmp_path: Path) -> None:
    import numpy as np

    save_label(own_studies / "labels" / "final" / "case-00.nii.gz", np.full((32, 32, 32), 4, np.uint8),
               np.diag([SPACING] * 3 + [1.0]))  # fmt: skip
    with pytest.raises(ValueError, match=r"case case-00.*unknown label values \[4\]"):
        run_training(_opts(own_studies, tmp_path))
    with pytest.raises(InputError, match="no 3D cases"):
        run_training(_opts(tmp_path / "empty", tmp_path))


def test_cli_trains_with_loader_workers(studies: Path, tmp_path: Path) -> None:
    from brain_tumor_mri.cli import main

    out, run_dir = tmp_path / "seg.pt", tmp_path / "run"
    argv = ["train", "segmentation", str(studies), "--init", "none", "--out", str(out), "--run-dir", str(run_dir),
            "--epochs", "1", "--patch", "32", "--samples-per-epoch", "4", "--device", "cpu", "--bf16", "off",
            "--workers", "2", "--cache-dir", str(tmp_path / "cache"), "--spacing", "3"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["published"] and result["cache"]["built"] == 3
    assert load_model(out, "segmentation").meta["training"]["command"].startswith("brain-tumor train segmentation")
    assert main(["train", "segmentation", str(studies), "--init", str(tmp_path / "missing.pt")]) == 2


def test_replay_source_is_cached_and_mixed_in(studies: Path, tmp_path: Path) -> None:
    from tests.helpers.segmentation import make_datastore

    replay = make_datastore(tmp_path / "original", n=2)  # same case ids as the primary datastore's first two
    result = run_training(_opts(studies, tmp_path, epochs=1, replay_studies=replay, replay_fraction=0.5))
    assert result.published and result.cache["n_train"] == 2
    assert result.cache["built"] == 5  # 3 primary + 2 replay cases, never confused although their ids repeat
    assert set(result.validation["trained"]) == {"case-01"}  # validation stays on the primary datastore
