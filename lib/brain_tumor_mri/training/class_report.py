"""Files a classification evaluation leaves behind, for people and the model card.

``confusion_matrix.csv`` / ``.png``, ``metrics.json`` and ``metrics.md`` (the per-class
table the model card cites). matplotlib runs headless (Agg). A training run's own record
(``metrics.csv``, TensorBoard, ``curves.png``) is written by ``runlog``, as for every model.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_markdown(metrics: dict[str, Any], title: str) -> str:
    """A Markdown summary: headline numbers, per-class table and confusion matrix."""
    classes = metrics["classes"]
    lines = [f"### {title}", "", f"n = {metrics['n']}; accuracy {_fmt(metrics['accuracy'])}; balanced accuracy "
             f"{_fmt(metrics['balanced_accuracy'])}; macro F1 {_fmt(metrics['macro_f1'])}; macro one-vs-rest ROC AUC "
             f"{_fmt(metrics['macro_roc_auc'])}", "", "| class | precision | recall | F1 | ROC AUC | support |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for c in classes:
        s = metrics["per_class"][c]
        lines.append(f"| {c} | {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} | "
                     f"{_fmt(s['roc_auc'])} | {s['support']} |")  # fmt: skip
    header = "| true \\ pred | " + " | ".join(classes) + " |"
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "", header, "|---" * (len(classes) + 1) + "|"]
    for c, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(metrics: dict[str, Any], path: str | Path, title: str) -> Path:
    """Confusion-matrix heat map with counts, rows = true class."""
    plt = _pyplot()
    classes, cm = metrics["classes"], metrics["confusion_matrix"]
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(cm, cmap="Blues")
    peak = max(max(r) for r in cm) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_evaluation(metrics: dict[str, Any], out_dir: str | Path, prefix: str, title: str) -> dict[str, Path]:
    """Write ``<prefix>_confusion_matrix.csv/.png``, ``<prefix>_metrics.json/.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("confusion_matrix.csv", "confusion_matrix.png", "metrics.json", "metrics.md")
    paths = {k: out / f"{prefix}_{k}" for k in names}
    with open(paths["confusion_matrix.csv"], "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["true\\pred", *metrics["classes"]])
        for c, row in zip(metrics["classes"], metrics["confusion_matrix"]):
            writer.writerow([c, *row])
    plot_confusion(metrics, paths["confusion_matrix.png"], title)
    paths["metrics.json"].write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    paths["metrics.md"].write_text(metrics_markdown(metrics, title), encoding="utf-8")
    logger.info("wrote %s evaluation to %s", prefix, out)
    return paths
