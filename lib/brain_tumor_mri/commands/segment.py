"""``brain-tumor segment INPUT... -o OUT``: the server's segmentation pipeline, offline.

INPUT is a BraTS-layout case folder (2017-2021 or 2023+ naming), a folder holding such
folders, or a datastore folder; each case's label is written to ``OUT/<id>-seg.nii.gz``
in the internal convention (or BraTS 2021's with ``--brats2021-labels``) plus a CSV of
volumes and of the low-confidence components post-processing removed. Same preprocessing,
network, restore and post-processing step as the server; ``--no-postprocess`` leaves the
last out (to measure what it does).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from tqdm import tqdm

from ..labels import REGION_CHANNELS, SEQUENCES

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="case folder(s) or a folder of cases")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--weights-dir", type=Path, help="folder with segmentation.pt + .json (default: model_weights/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--allow-missing-sequences", action="store_true", help="zero-fill missing sequences")
    p.add_argument(
        "--drop-sequence",
        choices=SEQUENCES,
        action="append",
        default=[],
        help="zero this sequence as if it were missing (to measure what its absence costs)",
    )
    p.add_argument("--no-postprocess", action="store_true",
                   help="skip the sidecar's low-confidence component filter (to measure what it does)")  # fmt: skip


def find_cases(inputs: list[Path]) -> list[tuple[str, dict[str, Path]]]:
    """(case id, sequence files) for every BraTS case folder or datastore case under ``inputs``."""
    from ..data.sources import BRATS2021, BRATS2023, discover
    from ..layout import image_path, list_cases, resolve_case

    found: list[tuple[str, dict[str, Path]]] = []
    for root in inputs:
        if not root.exists():
            raise ValueError(f"{root}: not found")
        ids = list_cases(root, kind="3d")
        if ids:  # a datastore folder
            for cid in ids:
                img = image_path(root, cid)
                if img is not None:
                    found.append((cid, resolve_case(img).sequences))
            continue
        for layout in (BRATS2021, BRATS2023):
            try:
                cases = discover(root, layout=layout)
            except ValueError:
                continue
            found += [(c.case_id, dict(c.sequences)) for c in cases]
    if not found:
        raise ValueError(f"no BraTS-layout case folders or datastore cases found under {[str(i) for i in inputs]}")
    return found


def run(args: argparse.Namespace) -> int:
    from ..config import AppConfig
    from ..imageio import load_sequences, save_label
    from ..inference.served import ServedModels

    cfg = AppConfig.from_conf({"device": args.device}, None, args.out, args.weights_dir)
    segmenter = ServedModels(cfg).segmenter()
    cases = find_cases(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, files in tqdm(cases, desc="segmenting", unit="case"):
        stack, affine, missing = load_sequences(files, allow_missing=args.allow_missing_sequences)
        for key in args.drop_sequence:
            stack[SEQUENCES.index(key)] = 0
            missing = sorted(set(missing) | {key})
        seg = segmenter.segment(stack, affine, postprocess=not args.no_postprocess)
        save_label(args.out / f"{case_id}-seg.nii.gz", seg.label, affine)
        rows.append(
            {
                "case_id": case_id,
                "model_version": seg.model_version,
                "missing": ";".join(missing),
                **{f"{k}_ml": v for k, v in seg.measurements["volumes_ml"].items()},
                **{f"removed_{k}": sum(c["region"] == k for c in seg.candidates) for k in REGION_CHANNELS},
            }
        )
    with open(args.out / "volumes.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    logger.info("segmented %d case(s) into %s", len(rows), args.out)
    return 0
