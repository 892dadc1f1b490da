"""The outcome of a training run, the same record for every model."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..layout import atomic_write_json


@dataclass
class TrainResult:
    """Status, publish decision and its basis, best validation metrics, timings and history."""

    status: str  # finished | early_stopped | time_limit | stopped
    published: bool
    decision: str
    publish_path: str | None
    version: str | None
    epochs_run: int
    best_epoch: int
    best_metric: float | None
    baseline_metric: float | None
    val_metrics: dict[str, Any]  # the best epoch's validation summary
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    decision_basis: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)  # per-case scores: {"initial": ..., "trained": ...}
    cache: dict[str, Any] = field(default_factory=dict)  # what the preprocessed-case cache did
    timings: dict[str, Any] = field(default_factory=dict)  # first step, data vs step time, batch size
    run_dir: str | None = None
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # classification: one result per input kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (MONAI Label's train response, the CLI, result.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        """Read back ``to_dict`` output (e.g. a ``result.json`` written by another process)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, path: str | Path) -> None:
        """Write ``result.json`` atomically (a reader sees the old file or the whole new one)."""
        atomic_write_json(path, self.to_dict(), sort_keys=False, default=str)
