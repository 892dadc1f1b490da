"""Per-epoch records of a training run: log line, CSV row, TensorBoard scalars, curves PNG.

The CSV (``metrics.csv``) is the durable record a person or a script reads; TensorBoard
(``tb/``) is for watching a run live; ``curves.png`` is written once at the end so a run
can be judged at a glance without any tool.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CSV_FIELDS = ("epoch", "train_loss", "val_dice_wt", "val_dice_tc", "val_dice_et", "val_dice_mean", "lr", "seconds")
_SHORT = {"whole_tumor": "wt", "tumor_core": "tc", "enhancing_tumor": "et", "mean": "mean"}


def csv_row(stats: dict[str, Any]) -> dict[str, Any]:
    """Flatten epoch stats into the CSV columns."""
    row = {"epoch": stats["epoch"], "train_loss": stats["train_loss"], "lr": stats["lr"], "seconds": stats["seconds"]}
    for region, short in _SHORT.items():
        row[f"val_dice_{short}"] = stats["val_dice"][region]
    return row


class RunLog:
    """Writes each epoch's stats to the log, ``metrics.csv`` and TensorBoard in ``run_dir``."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        """Create ``run_dir``, start ``metrics.csv`` with its header and open TensorBoard."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fp:
            csv.DictWriter(fp, CSV_FIELDS).writeheader()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is optional at run time
                logger.warning("tensorboard is not installed; skipping TensorBoard logs")

    def log(self, stats: dict[str, Any]) -> None:
        """Record one epoch."""
        row = csv_row(stats)
        logger.info(
            "epoch %d/%d loss %.4f val dice WT %.3f TC %.3f ET %.3f mean %.3f lr %.2e (%.1fs)",
            stats["epoch"], stats["epochs"], row["train_loss"], row["val_dice_wt"], row["val_dice_tc"],
            row["val_dice_et"], row["val_dice_mean"], row["lr"], row["seconds"],
        )  # fmt: skip
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fp:
            csv.DictWriter(fp, CSV_FIELDS).writerow(row)
        if self.writer is not None:
            step = int(stats["epoch"])
            self.writer.add_scalar("train/loss", row["train_loss"], step)
            self.writer.add_scalar("train/lr", row["lr"], step)
            for key in ("wt", "tc", "et", "mean"):
                self.writer.add_scalar(f"val/dice_{key}", row[f"val_dice_{key}"], step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def plot_curves(history: list[dict[str, Any]], path: str | Path, baseline: float | None = None) -> Path | None:
    """Training loss and validation Dice per epoch as a PNG (matplotlib, Agg backend)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [csv_row(s) for s in history]
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="Dice + BCE loss", title="training loss")
    for key in ("wt", "tc", "et", "mean"):
        ax_dice.plot(epochs, [r[f"val_dice_{key}"] for r in rows], marker="o", label=key.upper())
    if baseline is not None:
        ax_dice.axhline(baseline, color="grey", linestyle="--", label="initial model (mean)")
    ax_dice.set(xlabel="epoch", ylabel="Dice", ylim=(0, 1), title="validation Dice")
    ax_dice.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
