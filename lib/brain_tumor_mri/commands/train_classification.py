"""``brain-tumor train classification STUDIES``: train the 2D and/or 3D tumour-type classifiers.

Reads the datastore's labelled 2D images and 3D cases (``tumor_type`` in case.json),
splits by patient group, trains, and publishes ``classification_<kind>.pt`` into
``STUDIES/model`` (or ``--out``) only when the run beats the model served now.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from ..inference.classifier import WEIGHTS_2D, WEIGHTS_3D
from ..layout import published_dir
from .train_common import add_common_arguments, app_config, resolve_init, stop_on_sigterm

logger = logging.getLogger(__name__)

WEIGHTS = {"2d": WEIGHTS_2D, "3d": WEIGHTS_3D}


def add_classification_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the classification trainer (names match the segmentation target's)."""
    add_common_arguments(
        p, "", out_is_dir=True, batch_size=16, batch_unit="images",
        lr_help="peak learning rate (default: 1e-3 from scratch, 3e-4 fine-tuning)",
    )  # fmt: skip
    p.add_argument("--kind", choices=("2d", "3d", "both"), default="both", help="which model(s) to train")
    p.add_argument("--input-size", type=int, help="from scratch: square/cube input size (default: 128 2D, 48 3D)")
    p.add_argument("--spacing", type=float, help="from scratch: 3D working spacing in mm (default: 4)")


def _command(args: argparse.Namespace, kind: str, init: Path | None, out: Path, settings: Any, val: float) -> str:
    """The exact command that reproduces this run (recorded in the sidecar)."""
    return shlex.join([
        "brain-tumor", "train", "classification", str(args.studies), "--kind", kind, "--init", str(init or "none"),
        "--out", str(out.parent), "--epochs", str(settings.epochs), "--lr", str(settings.lr), "--seed",
        str(settings.seed), "--patience", str(settings.patience), "--val-fraction", str(val), "--batch-size",
        str(settings.batch_size), "--max-minutes", str(settings.max_minutes),
    ] + ([] if init else ["--input-size", str(settings.preprocess.size)])
      + (["--spacing", str(settings.preprocess.spacing_mm)] if kind == "3d" and not init else []))  # fmt: skip


def train_kind(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Load, split, train and maybe publish one input kind; returns the result summary."""
    from ..training.class_data import describe, load_samples, split_by_group
    from ..training.classification import ClassTrainSettings, init_preprocess, train_classification

    cfg = app_config(args.studies)
    init = resolve_init(args.init, published_dir(cfg.studies) / WEIGHTS[kind], cfg.weights_dir / WEIGHTS[kind])
    out = (args.out or published_dir(cfg.studies)) / WEIGHTS[kind]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (args.run_dir or published_dir(cfg.studies) / "runs") / f"classification_{kind}-{stamp}"
    overrides = {k: v for k, v in {"epochs": args.epochs, "seed": args.seed, "device": args.device, "bf16": args.bf16,
                                   "patience": args.patience}.items() if v is not None}  # fmt: skip
    lr = args.lr if args.lr is not None else (1e-3 if init is None else 3e-4)
    settings = ClassTrainSettings.from_config(cfg, input_kind=kind, lr=lr, batch_size=args.batch_size,
                                              max_minutes=args.max_minutes, **overrides)  # fmt: skip
    spec = init_preprocess(kind, init, args.input_size, args.spacing if kind == "3d" else None)
    settings = dataclasses.replace(settings, preprocess=spec)
    samples = load_samples(cfg.studies, spec)
    if not samples:
        return {"kind": kind, "status": "skipped", "decision": f"no labelled {kind} samples in {cfg.studies}"}
    val_fraction = cfg.train_val_fraction if args.val_fraction is None else args.val_fraction
    train, val = split_by_group(samples, val_fraction, settings.seed)
    data = {"studies": str(cfg.studies), "train": describe(train), "val": describe(val),
            "val_ids": sorted(s.case_id for s in val)}  # fmt: skip
    settings = dataclasses.replace(settings, data=data, command=_command(args, kind, init, out, settings, val_fraction))
    logger.info("%s: training on %d samples, validating on %d; run dir %s", kind, len(train), len(val), run_dir)
    with stop_on_sigterm() as should_stop:
        result = train_classification(settings, train, val, init, out, run_dir, None, should_stop)
    summary = {"kind": kind, **{k: v for k, v in result.to_dict().items() if k != "history"}, "run_dir": str(run_dir)}
    (run_dir / "result.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def run_classification(args: argparse.Namespace) -> int:
    """Train the requested kind(s); exit 3 when stopped, else 0."""
    kinds = ("2d", "3d") if args.kind == "both" else (args.kind,)
    if len(kinds) > 1 and args.init not in ("auto", "none"):
        raise ValueError("--init WEIGHTS needs a single --kind (2d or 3d)")
    status = 0
    for kind in kinds:
        summary = train_kind(args, kind)
        brief = {k: v for k, v in summary.items() if k != "val_metrics"}
        logger.info("%s result: %s", kind, json.dumps(brief, default=str))
        status = 3 if summary.get("status") == "stopped" else status
    return status


add_arguments = add_classification_arguments
run = run_classification
