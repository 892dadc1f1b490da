"""Training across processes: two torchrun "nodes" on localhost (gloo), as a cluster would run it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from brain_tumor_mri.networks.checkpoint import load_model
from brain_tumor_mri.training.launch import free_port
from tests.helpers.segmentation import make_datastore


def test_torchrun_two_nodes_train_and_rank_zero_publishes_once(tmp_path: Path) -> None:
    studies = make_datastore(tmp_path / "studies")
    out, run_dir = tmp_path / "seg.pt", tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    train = ["-m", "brain_tumor_mri.cli", "train", "segmentation", str(studies), "--epochs", "2", "--init", "none",
             "--out", str(out), "--run-dir", str(run_dir), "--patch", "32", "--samples-per-epoch", "4",
             "--batch-size", "1", "--device", "cpu", "--bf16", "off", "--spacing", "3", "--workers", "0",
             "--domain-random", "0", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-endpoint",
                endpoint,
                "--max-restarts",
                "0",
                "--no-python",
                sys.executable,
                *train,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    logs = [p.communicate(timeout=400)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "rank 0 of 2" in logs[0] and "rank 1 of 2" in logs[1]
    meta = load_model(out, "segmentation").meta
    assert meta["training"]["world_size"] == 2 and meta["training"]["epochs"] == 2
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # rank 0 logs; rank 1 writes nothing
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["published"] and result["timings"]["world_size"] == 2
    # each node makes sure its cache holds every case; sharing one folder, they leave one sound entry per case
    assert all("preprocessing" in log for log in logs)
    assert len(list((tmp_path / "cache").glob("*/*.btc"))) == 3 and not list((tmp_path / "cache").glob("*/.*"))
