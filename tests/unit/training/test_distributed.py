"""Data-parallel segmentation training: two CPU ranks on gloo via ``--nproc 2``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from brain_tumor_mri.networks.checkpoint import load_model
from brain_tumor_mri.server.train_task import ModelTrainTask
from brain_tumor_mri.training import loop
from tests.unit.training.test_segmentation import _make_datastore


def test_two_gloo_ranks_train_and_rank_zero_publishes_once(tmp_path: Path) -> None:
    from brain_tumor_mri.cli import main

    studies = _make_datastore(tmp_path / "studies")
    out, run_dir = tmp_path / "seg.pt", tmp_path / "run"
    argv = ["train", "segmentation", str(studies), "--nproc", "2", "--epochs", "2", "--init", "none",
            "--out", str(out), "--run-dir", str(run_dir), "--patch", "32", "--samples-per-epoch", "4",
            "--batch-size", "1", "--device", "cpu", "--bf16", "off"]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    meta = load_model(out, "segmentation").meta
    assert meta["training"]["world_size"] == 2 and meta["training"]["epochs"] == 2
    assert "--nproc 2" in meta["training"]["command"]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # rank 0 logs; rank 1 writes nothing
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["published"] and result["epochs_run"] == 2


def test_shards_are_disjoint_and_equal_length(monkeypatch) -> None:
    cases = [SimpleNamespace(image=torch.tensor([k]), label=None) for k in range(3)]
    monkeypatch.setattr(loop, "augment_batch", lambda batch, gen, aug: (torch.cat([b[0] for b in batch]), None))
    seen: dict[int, list[int]] = {}

    def record(rank: int) -> None:
        """Run one epoch of rank ``rank`` and keep the case indices it trained on."""
        monkeypatch.setattr(loop, "train_step", lambda net, image, label, ctx: seen[rank].extend(image.tolist()) or 0.0)
        seen[rank] = []
        order_gen = torch.Generator().manual_seed(0)
        loop.train_epoch(torch.nn.Identity(), cases, None, torch.Generator(), None, 1, 5, None, (rank, 2), order_gen)

    record(0)
    record(1)
    full = loop.epoch_order(3, 6, torch.Generator().manual_seed(0))  # 5 samples padded to 6 for 2 ranks
    assert len(seen[0]) == len(seen[1]) == 3
    assert seen[0] == full[0::2] and seen[1] == full[1::2]


def test_request_nproc_maps_to_the_cli_flag(tmp_path: Path) -> None:
    from brain_tumor_mri.commands.train_common import app_config

    cfg = app_config(tmp_path)
    seg = ModelTrainTask(cfg, "segmentation", "seg").cli_args({"nproc": 2})
    assert seg[seg.index("--nproc") + 1] == "2"
    assert "--nproc" not in ModelTrainTask(cfg, "classification", "cls").cli_args({"nproc": 2})
