"""The outcome of a training run, the same record for every model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """Status, publish decision, best validation metrics and the per-epoch history."""

    status: str  # finished | early_stopped | time_limit | stopped
    published: bool
    decision: str
    publish_path: str | None
    version: str | None
    epochs_run: int
    best_epoch: int
    best_metric: float
    baseline_metric: float | None
    val_metrics: dict[str, Any]  # segmentation: Dice per region; classification: accuracy etc.
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (MONAI Label's train response, the CLI, result.json)."""
        return asdict(self)
