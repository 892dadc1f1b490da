"""``brain-tumor evaluate PRED GT``: segmentation metrics per BraTS region, as tables and a CSV.

PRED and GT are label files or folders of them, matched by case id (``<id>-seg``,
``<id>_seg`` or ``<id>`` stems); labels may use the internal or a BraTS convention. Per
region (whole tumour, tumour core, enhancing tumour): Dice, HD95 (mm), IoU, sensitivity and
specificity (whole volume, as BraTS), see ``training/metrics.py``. Writes a per-case CSV
and a summary (``<csv>_summary.md`` / ``.json``): mean and median per metric, the number of
cases whose reference region is empty and how they are scored; with ``--cases-meta``
(the generator's ``cases.jsonl`` or a datastore) and ``--group-by COLUMN`` (e.g.
``anatomy``, ``tumor_type``) also per group.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import REGIONS as _REGION_LABELS

logger = logging.getLogger(__name__)

_STEM = re.compile(r"([-_]seg)?(\.nii\.gz|\.nii|\.nrrd)$", re.IGNORECASE)
REGIONS = tuple(_REGION_LABELS)  # whole_tumor, tumor_core, enhancing_tumor
METRICS = ("dice", "hd95", "iou", "sensitivity", "specificity")
EMPTY_RULE = (
    "BraTS rule for a region empty in the reference: Dice and IoU 1 if the prediction is empty too, else 0; HD95 0 "
    "if both are empty, else 373.13 mm; sensitivity undefined (left out of its mean and median); specificity over "
    "the whole volume as usual."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="predicted label file or folder")
    p.add_argument("gt", type=Path, help="ground-truth label file or folder")
    p.add_argument("--csv", type=Path, default=None, help="per-case CSV (default: PRED folder/evaluation.csv)")
    p.add_argument("--pred-convention", default="internal", help="label numbering of PRED (default internal)")
    p.add_argument("--gt-convention", default="internal", help="label numbering of GT (e.g. brats2021, brats2023)")
    p.add_argument("--cases-meta", type=Path, metavar="FILE", help="cases.jsonl (generator) or a datastore folder")
    p.add_argument("--group-by", metavar="COLUMN", help="also summarise per value of this metadata column")


def _index(path: Path) -> dict[str, Path]:
    """case id -> label file, for a file or a folder (searched recursively)."""
    files = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if _STEM.search(p.name)]
    return {_STEM.sub("", p.name): p for p in files if p.is_file()}


def _value(v: float | None) -> float | str:
    return "" if v is None else round(float(v), 4)


def evaluate_pairs(pred: Path, gt: Path, pred_conv: str = "internal", gt_conv: str = "internal") -> list[dict]:
    """Per-case region metrics for every case id present in both ``pred`` and ``gt``."""
    from ..imageio import check_same_geometry, load_volume, voxel_sizes_mm
    from ..labels import convert_labels
    from ..training.metrics import region_metrics

    p_idx, g_idx = _index(pred), _index(gt)
    if pred.is_file() and gt.is_file():
        p_idx, g_idx = {"case": pred}, {"case": gt}
    common = sorted(set(p_idx) & set(g_idx))
    if not common:
        raise ValueError(f"no case ids in common between {pred} ({len(p_idx)} files) and {gt} ({len(g_idx)} files)")
    rows = []
    for cid in common:
        p, pa = load_volume(p_idx[cid])
        g, ga = load_volume(g_idx[cid])
        check_same_geometry(f"GT {g_idx[cid].name}", g.shape, ga, f"prediction {p_idx[cid].name}", p.shape, pa)
        spacing = voxel_sizes_mm(ga).tolist()
        scores = region_metrics(
            convert_labels(p, pred_conv, source=p_idx[cid].name),
            convert_labels(g, gt_conv, source=g_idx[cid].name),
            spacing,
        )
        row: dict[str, Any] = {"case_id": cid}
        for r, d in scores.items():
            row.update({f"{r}_{m}": _value(d[m]) for m in METRICS})
            row[f"{r}_reference_empty"] = int(bool(d["reference_empty"]))
        rows.append(row)
    return rows


def _stats(rows: list[dict], key: str) -> dict[str, float | int | None]:
    """Mean, median and count over the rows where ``key`` is defined."""
    vals = np.array([float(r[key]) for r in rows if r[key] != ""], dtype=np.float64)
    if not vals.size:
        return {"mean": None, "median": None, "n": 0}
    return {"mean": float(vals.mean()), "median": float(np.median(vals)), "n": int(vals.size)}


def mean_interval(values: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the mean over cases (None with fewer than two).

    The test sets hold tens of cases and per-case Dice spreads from 0 to 1, so a mean Dice
    moves by several points with the cases drawn; the interval says how far. Seeded.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.size < 2:
        return None
    means = vals[np.random.default_rng(seed).integers(0, vals.size, size=(draws, vals.size))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Per region and metric: mean, median, n (Dice also a 95 % interval of its mean); empty-reference counts."""
    out: dict[str, Any] = {"n_cases": len(rows), "empty_reference_rule": EMPTY_RULE, "regions": {}}
    for region in REGIONS:
        entry: dict[str, Any] = {m: _stats(rows, f"{region}_{m}") for m in METRICS}
        dice = np.array([float(r[f"{region}_dice"]) for r in rows if r[f"{region}_dice"] != ""])
        entry["dice"]["mean_ci95"] = mean_interval(dice)
        entry["empty_reference"] = sum(int(r[f"{region}_reference_empty"]) for r in rows)
        out["regions"][region] = entry
    return out


def _f(v: float | int | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_table(rows: list[dict]) -> str:
    """Markdown table of mean and median per region and metric, with the empty-reference counts."""
    s = summarise(rows)
    lines = ["| region | Dice mean / median | Dice mean, 95 % interval | HD95 mm mean / median | IoU mean "
             "| sensitivity mean | specificity mean | empty reference |", "|---" * 8 + "|"]  # fmt: skip
    for region, e in s["regions"].items():
        ci = e["dice"]["mean_ci95"]
        interval = f"{_f(ci[0])}-{_f(ci[1])}" if ci else "n/a"
        lines.append(f"| {region} | {_f(e['dice']['mean'])} / {_f(e['dice']['median'])} | {interval} | "
                     f"{_f(e['hd95']['mean'], 2)} / {_f(e['hd95']['median'], 2)} | {_f(e['iou']['mean'])} | "
                     f"{_f(e['sensitivity']['mean'])} (n={e['sensitivity']['n']}) | {_f(e['specificity']['mean'], 4)} "
                     f"| {e['empty_reference']} |")  # fmt: skip
    return "\n".join(lines) + f"\n\n{len(rows)} case(s). {EMPTY_RULE}"


def add_groups(rows: list[dict], meta_path: Path, column: str) -> None:
    """Add ``column`` from the case metadata to each row (``unknown`` when the case is not found)."""
    from ..training.case_meta import group_value, load_case_meta, lookup

    table = load_case_meta(meta_path)
    for row in rows:
        row[column] = group_value(lookup(row["case_id"], table), column)


def group_table(rows: list[dict], column: str) -> str:
    """Markdown table of Dice (mean) and HD95 (median) per region for each value of ``column``."""
    lines = [f"| {column} | cases | Dice WT / TC / ET (mean) | HD95 WT / TC / ET (median, mm) | "
             "empty ref. WT / TC / ET |", "|---|---|---|---|---|"]  # fmt: skip
    for value in sorted({r[column] for r in rows}):
        part = [r for r in rows if r[column] == value]
        s = summarise(part)["regions"]
        dice = " / ".join(_f(s[g]["dice"]["mean"]) for g in REGIONS)
        hd = " / ".join(_f(s[g]["hd95"]["median"], 2) for g in REGIONS)
        empty = " / ".join(str(s[g]["empty_reference"]) for g in REGIONS)
        lines.append(f"| {value} | {len(part)} | {dice} | {hd} | {empty} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.group_by and not args.cases_meta:
        raise ValueError("--group-by needs --cases-meta (the generator's cases.jsonl or a datastore folder)")
    rows = evaluate_pairs(args.pred, args.gt, args.pred_convention, args.gt_convention)
    if args.group_by:
        add_groups(rows, args.cases_meta, args.group_by)
    out = args.csv or (args.pred if args.pred.is_dir() else args.pred.parent) / "evaluation.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = summary_table(rows)
    summary: dict[str, Any] = summarise(rows)
    if args.group_by:
        text += f"\n\nBy `{args.group_by}`:\n\n" + group_table(rows, args.group_by)
        values = sorted({r[args.group_by] for r in rows})
        summary["groups"] = {v: summarise([r for r in rows if r[args.group_by] == v]) for v in values}
    stem = out.with_suffix("")
    Path(f"{stem}_summary.md").write_text(text + "\n", encoding="utf-8")
    Path(f"{stem}_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("BraTS-region scores (per-case CSV: %s, summary: %s_summary.md)\n%s", out, stem, text)
    return 0
