"""Files a classification evaluation leaves behind, for people and the model card.

``confusion_matrix.csv`` / ``.png``, ``reliability.png`` (reliability diagram before and
after temperature scaling), ``metrics.json`` and ``metrics.md`` (the tables the model card
cites). matplotlib runs headless (Agg). A training run's own record (``metrics.csv``,
TensorBoard, ``curves.png``) is written by ``runlog``, as for every model.
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
    ci = metrics.get("accuracy_ci95")
    interval = f" (95 % interval {_fmt(ci[0])}-{_fmt(ci[1])}, resampling patients)" if ci else ""
    acc = f"{_fmt(metrics['accuracy'])}{interval}"
    lines = [f"### {title}", "", f"n = {metrics['n']}; accuracy {acc}; balanced accuracy "
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
    for section in (_split_md, _calibration_md, _confidence_md, _out_of_class_md, _groups_md):
        lines += section(metrics)
    return "\n".join(lines) + "\n"


def _split_md(metrics: dict[str, Any]) -> list[str]:
    split = metrics.get("split")
    if not split:
        return []
    note = ""
    if split["overlap_with_calibration_set"]:
        note = (f" **{split['overlap_with_calibration_set']} image(s) are identical to images the temperature was "
                "fitted on: calibration figures are optimistic.**")  # fmt: skip
    lines = ["", f"{split['n_images']} image(s) from {split['n_patients']} patient(s); figures are per image, "
             f"split by patient.{note}"]  # fmt: skip
    pp = metrics.get("per_patient")
    if pp:
        lines += ["", f"Per patient (mean probabilities over a patient's images, each patient counted once): "
                  f"n = {pp['n']}, accuracy {_fmt(pp['accuracy'])}, balanced accuracy "
                  f"{_fmt(pp['balanced_accuracy'])}, macro ROC AUC {_fmt(pp['macro_roc_auc'])}."]  # fmt: skip
    return lines


def _calibration_md(metrics: dict[str, Any]) -> list[str]:
    cal = metrics.get("calibration")
    if not cal:
        return []
    b, a = cal["before"], cal["after"]
    lines = ["", f"Calibration (15-bin top-label ECE, NLL): temperature {cal['temperature']:.3f}; ECE "
             f"{_fmt(b['ece'])} before, {_fmt(a['ece'])} after; NLL {_fmt(b['nll'])} before, {_fmt(a['nll'])} after "
             "(reliability diagram: `*_reliability.png`)."]  # fmt: skip
    ref = a.get("ece_if_calibrated")
    if ref and ref.get("draws"):
        lines.append(f"A perfectly calibrated model with these probabilities would read ECE {_fmt(ref['median'])} "
                     f"(median; 95th percentile {_fmt(ref['p95'])}) on {metrics['n']} answers, by binning noise "
                     f"alone; share of such draws at or above the ECE after scaling: {_fmt(ref['p_value'])} "
                     "(small = evidence of miscalibration).")  # fmt: skip
    return lines


def _confidence_md(metrics: dict[str, Any]) -> list[str]:
    c = metrics.get("confidence")
    if not c:
        return []
    reasons = ", ".join(f"{k} {v}" for k, v in c["reasons"].items()) or "none"
    return ["", f"Low-confidence answers: {c['n_low']} of {c['n']} ({100 * (c['low_rate'] or 0):.1f} %); accuracy "
            f"{_fmt(c['accuracy_confident'])} on the confident answers, {_fmt(c['accuracy_low'])} on the "
            f"low-confidence ones (best guess). Reasons: {reasons}."]  # fmt: skip


def _out_of_class_md(metrics: dict[str, Any]) -> list[str]:
    out = metrics.get("out_of_class") or {}
    lines = []
    for t, c in out.items():
        answers = ", ".join(f"{k} {v}" for k, v in sorted(c["answers"].items()))
        lines += ["", f"Cases of type `{t}` (not a class): {c['n']}; answers: {answers}."]
    return lines


def _groups_md(metrics: dict[str, Any]) -> list[str]:
    grouped = metrics.get("by_group")
    if not grouped:
        return []
    lines = ["", f"By `{grouped['column']}`:", "",
             "| group | images | patients | accuracy | balanced acc. | ECE | low-confidence | accuracy (confident) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for value, g in grouped["groups"].items():
        lines.append(f"| {value} | {g['n']} | {g['n_patients']} | {_fmt(g['accuracy'])} | "
                     f"{_fmt(g['balanced_accuracy'])} | {_fmt(g['ece'])} | {_fmt(g['low_rate'])} | "
                     f"{_fmt(g['accuracy_confident'])} |")  # fmt: skip
    return lines


def plot_reliability(metrics: dict[str, Any], path: str | Path, title: str) -> Path:
    """Reliability diagram (accuracy vs confidence per bin, with bin counts) before and after scaling."""
    plt = _pyplot()
    cal = metrics["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for ax, name in zip(axes, ("before", "after")):
        part = cal[name]
        bins = [b for b in part["reliability"] if b["count"]]
        width = part["reliability"][0]["hi"] - part["reliability"][0]["lo"]
        ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
               edgecolor="black", alpha=0.7, label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.plot([b["confidence"] for b in bins], [b["confidence"] for b in bins], "o", color="red", ms=3,
                label="mean confidence")  # fmt: skip
        for b in bins:
            ax.text(b["lo"] + width / 2, 0.02, str(b["count"]), ha="center", fontsize=7)
        t = 1.0 if name == "before" else cal["temperature"]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-label confidence",
               title=f"{name} (T = {t:.2f}): ECE {_fmt(part['ece'])}")  # fmt: skip
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


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
    """Write ``<prefix>_confusion_matrix.csv/.png``, ``_reliability.png``, ``_metrics.json/.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("confusion_matrix.csv", "confusion_matrix.png", "metrics.json", "metrics.md", "reliability.png")
    paths = {k: out / f"{prefix}_{k}" for k in names}
    with open(paths["confusion_matrix.csv"], "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["true\\pred", *metrics["classes"]])
        for c, row in zip(metrics["classes"], metrics["confusion_matrix"]):
            writer.writerow([c, *row])
    plot_confusion(metrics, paths["confusion_matrix.png"], title)
    if "calibration" in metrics:
        plot_reliability(metrics, paths["reliability.png"], title)
    else:
        paths.pop("reliability.png")
    paths["metrics.json"].write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    paths["metrics.md"].write_text(metrics_markdown(metrics, title), encoding="utf-8")
    logger.info("wrote %s evaluation to %s", prefix, out)
    return paths
