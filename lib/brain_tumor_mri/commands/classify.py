"""``brain-tumor classify``: tumour type of 2D images or BraTS case folders, or a held-out evaluation.

``brain-tumor classify INPUT... [--csv OUT]`` classifies PNG/JPEG/2D NIfTI images and
BraTS-layout case folders (four sequence files); each answer says how sure it is
(``confidence``; ``uncertain`` when low). ``brain-tumor classify --evaluate STUDIES --out
DIR`` runs the served models on every labelled case of a datastore and writes the
model-card files: confusion matrix CSV/PNG, reliability diagram before/after temperature
scaling, metrics JSON/MD (calibration, low-confidence rate, answers on out-of-class cases,
optional per-group figures with ``--cases-meta`` and ``--group-by``), per-case predictions
and timing (median of 20 runs after warm-up). ``--with-segmentation`` checks 3D answers
against the served segmentation as the server does (one segmentation per case).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..imageio import InputError, load_sequences
from ..labels import TUMOR_CLASSES

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Inputs or ``--evaluate``, weights location and device options."""
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="2D image files or BraTS case folders")
    p.add_argument("--csv", type=Path, metavar="OUT", help="also write the results as CSV")
    p.add_argument("--evaluate", type=Path, metavar="STUDIES", help="evaluate on a labelled datastore instead")
    p.add_argument("--out", type=Path, metavar="DIR", help="--evaluate: where to write the figures and metrics")
    p.add_argument("--kind", choices=("2d", "3d", "both"), default="both", help="--evaluate: which model(s)")
    p.add_argument("--timing-runs", type=int, default=20, help="--evaluate: timed runs per model (0: skip timing)")
    p.add_argument("--cases-meta", type=Path, metavar="FILE", help="--evaluate: cases.jsonl (generator) or a datastore")
    p.add_argument("--group-by", metavar="COLUMN", help="--evaluate: also report per value of this metadata column")
    p.add_argument("--with-segmentation", action="store_true",
                   help="--evaluate: check 3D answers against the served segmentation (runs it per case)")  # fmt: skip
    p.add_argument("--weights-dir", type=Path, metavar="DIR", help="weights folder (default: shipped model_weights/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast on the CPU")


def _classifier(args: argparse.Namespace) -> Any:
    from ..config import default_weights_dir
    from ..inference.classifier import build_classifier
    from ..runtime import pick_device, use_reduced_precision

    weights_dir = args.weights_dir or default_weights_dir()
    device = pick_device(args.device)
    return build_classifier(Path(weights_dir), device, use_reduced_precision(device, args.bf16))


def case_folder_sequences(folder: Path) -> dict[str, Path]:
    """Sequence key -> file of a BraTS-layout case folder (2023 or 2021 naming)."""
    from ..data.sources import BRATS_SUFFIXES, brats_files

    best: dict[str, Path] = {}
    for layout in BRATS_SUFFIXES:
        found = {k: v for k, v in brats_files(folder, layout).items() if k != "seg"}
        best = found if len(found) > len(best) else best
    if not best:
        raise InputError(f"{folder}: no BraTS-named sequence files (e.g. <id>-t1n.nii.gz) in this folder")
    return best


def classify_input(classifier: Any, path: Path) -> dict[str, Any]:
    """Classify one image file or case folder; returns a result row."""
    from ..layout import resolve_case
    from ..transforms.classify_preprocess import input_kind_of

    if path.is_dir():
        stack, affine, _ = load_sequences(case_folder_sequences(path), allow_missing=False)
        result = classifier.classify_case(stack, affine)
    elif input_kind_of(path) == "2d":
        result = classifier.classify_image(path)
    else:  # a datastore FLAIR with its sequences under cases/<id>/
        stack, affine, _ = load_sequences(resolve_case(path).sequences, allow_missing=False)
        result = classifier.classify_case(stack, affine)
    conf = result.confidence
    return {"input": str(path), "input_kind": result.input_kind, "tumor_type": result.tumor_type,
            "best_guess": result.best_guess, "confidence": conf.level,
            "reasons": "; ".join(r.message for r in conf.reasons),
            **{f"p_{c}": round(result.probabilities[c], 6) for c in TUMOR_CLASSES},
            "model_version": result.model_version}  # fmt: skip


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.DictWriter(fp, fields)
        writer.writeheader()
        writer.writerows(rows)


def run_inputs(args: argparse.Namespace) -> int:
    """Classify each input; a bad input is reported and the rest still run (exit 2 if any failed)."""
    classifier = _classifier(args)
    rows, failed = [], 0
    for path in args.inputs:
        try:
            row = classify_input(classifier, path)
        except InputError as exc:
            logger.error("%s: %s", path, exc)
            rows.append({"input": str(path), "error": str(exc)})
            failed += 1
            continue
        rows.append(row)
        probs = " ".join(f"{c}={row[f'p_{c}']:.3f}" for c in TUMOR_CLASSES)
        why = f"\t({row['reasons']})" if row["reasons"] else ""
        sys.stdout.write(f"{path}\t{row['input_kind']}\t{row['tumor_type']}\tbest guess {row['best_guess']}\t"
                         f"{row['confidence']} confidence\t{probs}{why}\n")  # fmt: skip
    if args.csv:
        _write_csv(args.csv, rows)
        logger.info("wrote %s", args.csv)
    return 2 if failed else 0


def _lesions(args: argparse.Namespace) -> Any:
    """The segmentation cross-check for ``--with-segmentation`` (served segmentation weights)."""
    from ..config import AppConfig
    from ..inference.consistency import CaseLesions
    from ..inference.served import ServedModels

    cfg = AppConfig.from_conf({"device": args.device, "bf16": args.bf16}, None, args.evaluate, args.weights_dir)
    models = ServedModels(cfg)
    return CaseLesions(models.segmenter, lesion_type=models.lesion_type().get)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the served model(s) on a labelled datastore and write the model-card files."""
    from ..training.case_meta import load_case_meta
    from ..training.class_eval import evaluate_datastore, time_classifier
    from ..training.class_report import write_evaluation

    if args.out is None:
        raise ValueError("--evaluate needs --out DIR")
    group_by = getattr(args, "group_by", None)
    meta_path = getattr(args, "cases_meta", None) or (args.evaluate if group_by else None)  # default: case.json
    table = load_case_meta(meta_path) if meta_path else None
    lesions = _lesions(args) if getattr(args, "with_segmentation", False) else None
    classifier = _classifier(args)
    kinds = ("2d", "3d") if args.kind == "both" else (args.kind,)
    for kind in kinds:
        if not classifier.available(kind):
            raise ValueError(f"no {kind} classification weights found")
        metrics, rows = evaluate_datastore(classifier, args.evaluate, kind, table, group_by, lesions)
        if metrics["split"]["overlap_with_calibration_set"]:
            logger.warning("%s: %d evaluated image(s) are identical to calibration images: calibration figures are "
                           "optimistic", kind, metrics["split"]["overlap_with_calibration_set"])  # fmt: skip
        if args.timing_runs > 0:
            metrics["timing"] = time_classifier(classifier, args.evaluate, rows[0]["case_id"], kind, args.timing_runs)
        metrics["evaluated_on"] = str(args.evaluate)
        write_evaluation(metrics, args.out, f"classification_{kind}", f"{kind.upper()} classifier, held-out cases")
        _write_csv(Path(args.out) / f"classification_{kind}_predictions.csv", rows)
        headline = {k: metrics[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_roc_auc")}
        cal = {k: metrics["calibration"][k]["ece"] for k in ("before", "after")}
        logger.info("%s: %s ECE %s low-confidence %s timing %s", kind, json.dumps(headline), json.dumps(cal),
                    json.dumps({k: metrics["confidence"][k] for k in ("low_rate", "accuracy_confident")}),
                    json.dumps(metrics.get("timing")))  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    """``--evaluate`` or classify the inputs."""
    if args.evaluate is not None:
        return run_evaluate(args)
    if not args.inputs:
        raise ValueError("give INPUT files/folders or --evaluate STUDIES")
    return run_inputs(args)
