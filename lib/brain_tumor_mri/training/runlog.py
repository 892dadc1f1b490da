"""The record a training run leaves: log lines, ``metrics.csv``, TensorBoard scalars, ``curves.png``.

The CSV is the durable record a person or a script reads; TensorBoard (``tb/``) is for
watching a run live; ``curves.png`` is written at the end so a run can be judged at a
glance. Every model writes the same columns shape: the epoch, the training loss, its
validation summary (``val_<key>``), the learning rate and where the epoch's time went
(waiting for data vs computing steps vs validating). Only rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TIMING_FIELDS = ("lr", "data_s", "step_s", "val_s", "seconds")


class RunLog:
    """Writes each epoch's row to the log, ``metrics.csv`` and TensorBoard in ``run_dir``."""

    def __init__(self, run_dir: str | Path, val_keys: Sequence[str], tag: str, tensorboard: bool = True) -> None:
        """Create ``run_dir``, start ``metrics.csv`` with its header and open TensorBoard."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        self.val_fields = tuple(f"val_{k}" for k in val_keys)
        self.fields = ("epoch", "train_loss", *self.val_fields, *TIMING_FIELDS)
        self.csv_path = self.run_dir / "metrics.csv"
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fp:
            csv.DictWriter(fp, self.fields).writeheader()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is optional at run time
                logger.warning("tensorboard is not installed; skipping TensorBoard logs")

    def log(self, row: dict[str, Any]) -> None:
        """Record one epoch (keys: ``self.fields``)."""
        vals = " ".join(f"{k[4:]} {row[k]:.4f}" for k in self.val_fields)
        logger.info(
            "%s epoch %d/%d: loss %.4f | val %s | lr %.2e | %.1fs (data %.1fs, steps %.1fs, validation %.1fs)",
            self.tag, row["epoch"], row.get("epochs", row["epoch"]), row["train_loss"], vals, row["lr"],
            row["seconds"], row["data_s"], row["step_s"], row["val_s"],
        )  # fmt: skip
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fp:
            csv.DictWriter(fp, self.fields, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            step = int(row["epoch"])
            for key in self.fields[1:]:
                group = "val" if key in self.val_fields else "time" if key in TIMING_FIELDS[1:] else "train"
                self.writer.add_scalar(f"{group}/{key.removeprefix('val_')}", float(row[key]), step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def plot_curves(
    history: list[dict[str, Any]], path: str | Path, metric_keys: Sequence[str], metric_label: str,
    baseline: float | None = None,
) -> Path | None:  # fmt: skip
    """Training loss (and validation loss when logged) and validation metrics per epoch as a PNG."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    if "val_loss" in history[0]:
        ax_loss.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    for key in metric_keys:
        ax_val.plot(epochs, [r[f"val_{key}"] for r in history], marker="o", label=key.upper() if len(key) <= 4 else key)
    if baseline is not None:
        ax_val.axhline(baseline, color="grey", linestyle="--", label=f"initial model ({metric_label})")
    ax_val.set(xlabel="epoch", ylim=(0, 1), title=f"validation ({metric_label})")
    ax_val.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
