"""``brain-tumor evaluate PRED GT``: Dice and HD95 per BraTS region, as a table and a CSV.

PRED and GT are label files or folders of them, matched by case id (``<id>-seg``,
``<id>_seg`` or ``<id>`` stems); labels may use the internal or a BraTS convention.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_STEM = re.compile(r"([-_]seg)?(\.nii\.gz|\.nii|\.nrrd)$", re.IGNORECASE)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="predicted label file or folder")
    p.add_argument("gt", type=Path, help="ground-truth label file or folder")
    p.add_argument("--csv", type=Path, default=None, help="per-case CSV (default: PRED folder/evaluation.csv)")
    p.add_argument("--pred-convention", default="internal", help="label numbering of PRED (default internal)")
    p.add_argument("--gt-convention", default="internal", help="label numbering of GT (e.g. brats2021, brats2023)")


def _index(path: Path) -> dict[str, Path]:
    """case id -> label file, for a file or a folder (searched recursively)."""
    files = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if _STEM.search(p.name)]
    return {_STEM.sub("", p.name): p for p in files if p.is_file()}


def evaluate_pairs(pred: Path, gt: Path, pred_conv: str = "internal", gt_conv: str = "internal") -> list[dict]:
    """Per-case region scores for every case id present in both ``pred`` and ``gt``."""
    from ..imageio import check_same_geometry, load_volume
    from ..labels import convert_labels
    from ..training.metrics import region_scores

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
        spacing = np.sqrt((ga[:3, :3] ** 2).sum(axis=0))
        scores = region_scores(
            convert_labels(p, pred_conv, source=p_idx[cid].name),
            convert_labels(g, gt_conv, source=g_idx[cid].name),
            spacing,
        )
        rows.append({"case_id": cid, **{f"{r}_{m}": round(v, 4) for r, d in scores.items() for m, v in d.items()}})
    return rows


def summary_table(rows: list[dict]) -> str:
    """Markdown table of mean and SD per region."""
    lines = ["| region | Dice mean | Dice SD | HD95 mean (mm) | HD95 SD |", "|---|---|---|---|---|"]
    for region in ("whole_tumor", "tumor_core", "enhancing_tumor"):
        d = np.array([r[f"{region}_dice"] for r in rows])
        h = np.array([r[f"{region}_hd95"] for r in rows])
        lines.append(f"| {region} | {d.mean():.3f} | {d.std():.3f} | {h.mean():.2f} | {h.std():.2f} |")
    return "\n".join(lines) + f"\n\n{len(rows)} case(s)."


def run(args: argparse.Namespace) -> int:
    rows = evaluate_pairs(args.pred, args.gt, args.pred_convention, args.gt_convention)
    out = args.csv or (args.pred if args.pred.is_dir() else args.pred.parent) / "evaluation.csv"
    with open(out, "w", newline="", encoding="utf-8") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    logger.info("BraTS-region scores (per-case CSV: %s)\n%s", out, summary_table(rows))
    return 0
