"""``brain-tumor train MODEL STUDIES``: train or fine-tune a model from a datastore folder.

Each trainable model is one entry of ``TARGETS`` (its own sub-parser and run function),
so adding e.g. ``classification`` means adding one ``add_*_arguments`` / ``run_*`` pair.
``--init auto`` (the default) fine-tunes the model the server would serve now: the
datastore's published weights, else the shipped demo weights, else trains from scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ..layout import SEG_WEIGHTS, published_dir
from .train_common import add_common_arguments, app_config, resolve_init, stop_on_sigterm

logger = logging.getLogger(__name__)


def add_segmentation_arguments(p: argparse.ArgumentParser) -> None:
    """Options specific to the 3D region segmentation network."""
    add_common_arguments(p, SEG_WEIGHTS)
    p.add_argument("--patch", type=int, default=96, help="cubic training patch in voxels, multiple of 16 (default: 96)")
    p.add_argument("--samples-per-epoch", type=int, default=0, help="patches per epoch (default: max(cases, 16))")
    p.add_argument("--schedule", choices=("cosine", "plateau"), default="cosine", help="learning-rate schedule")
    p.add_argument("--allow-missing-sequences", action="store_true", help="zero-fill missing sequences")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel worker processes: nccl on GPUs, gloo on CPU (default: 1)")  # fmt: skip


def run_segmentation(args: argparse.Namespace) -> int:
    """Load the datastore's labelled cases, train, and publish if the model improved."""
    from ..training import distributed as ddp
    from ..training.seg_data import load_split
    from ..training.segmentation import SegTrainSettings, init_spacing, train_segmentation
    from ..transforms.augment import AugmentSettings

    cfg = app_config(args.studies)
    published = published_dir(cfg.studies) / SEG_WEIGHTS
    init = resolve_init(args.init, published, cfg.weights_dir / SEG_WEIGHTS)
    out = args.out or published
    run_dir = args.run_dir or published_dir(cfg.studies) / "runs" / f"segmentation-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.patch <= 0 or args.patch % 16:
        raise ValueError(f"--patch {args.patch}: expected a positive multiple of 16")
    if args.nproc < 1:
        raise ValueError(f"--nproc {args.nproc}: expected at least 1")
    if args.nproc > 1 and not ddp.is_distributed():
        return _launch_segmentation(args, init, run_dir, args.device or cfg.device)
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "device": args.device, "bf16": args.bf16,
        "patience": args.patience,
    }.items() if v is not None}  # fmt: skip
    val_fraction = cfg.train_val_fraction if args.val_fraction is None else args.val_fraction
    settings = SegTrainSettings.from_config(
        cfg, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch, schedule=args.schedule,
        max_seconds=args.max_minutes * 60,
        augment=AugmentSettings(patch=(args.patch,) * 3), spacing=init_spacing(init, cfg.seg_spacing), **overrides,
    )  # fmt: skip
    allow_missing = args.allow_missing_sequences
    train, val, data = load_split(cfg.studies, settings.spacing, val_fraction, settings.seed, allow_missing)
    command = shlex.join([
        "brain-tumor", "train", "segmentation", str(args.studies), "--init", str(init or "none"), "--out", str(out),
        "--epochs", str(settings.epochs), "--lr", str(settings.lr), "--seed", str(settings.seed),
        "--patience", str(settings.patience), "--val-fraction", str(val_fraction), "--patch", str(args.patch),
        "--batch-size", str(settings.batch_size), "--samples-per-epoch", str(settings.samples_per_epoch),
        "--schedule", settings.schedule, "--max-minutes", f"{args.max_minutes:g}",
        *(["--nproc", str(args.nproc)] if args.nproc > 1 else []),
    ])  # fmt: skip
    settings = dataclasses.replace(settings, data=data, command=command)
    logger.info("training on %d cases, validating on %d; run dir %s", len(train), len(val), run_dir)
    with stop_on_sigterm() as should_stop:
        result = train_segmentation(settings, train, val, init, out, run_dir, None, should_stop)
    if not ddp.is_main():
        return 0 if result.status != "stopped" else 3
    summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    (Path(run_dir) / "result.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    logger.info("result: %s", json.dumps(summary, default=str))
    return 0 if result.status != "stopped" else 3


def _launch_segmentation(args: argparse.Namespace, init: Path | None, run_dir: Path, device: str) -> int:
    """Run the command as ``--nproc`` ranks sharing ``init`` and ``run_dir``; exit code from rank 0."""
    from .launch import launch

    args = argparse.Namespace(**{**vars(args), "run_dir": Path(run_dir), "init": str(init or "none")})
    if not launch(run, args, args.nproc, device):
        return 1
    result = json.loads((Path(run_dir) / "result.json").read_text(encoding="utf-8"))
    return 0 if result["status"] != "stopped" else 3


def add_classification_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the 2D/3D tumour-type classifiers (see ``train_classification``)."""
    from .train_classification import add_classification_arguments as add

    add(p)


def run_classification(args: argparse.Namespace) -> int:
    """Train the tumour-type classifier(s) and publish those that improved."""
    from .train_classification import run_classification as run_

    return run_(args)


#: Trainable models: name -> (add arguments, run, help).
TARGETS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "segmentation": (add_segmentation_arguments, run_segmentation, "3D U-Net for WT/TC/ET regions"),
    "classification": (add_classification_arguments, run_classification, "2D and 3D tumour-type classifiers"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per trainable model."""
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (add, _, help_) in TARGETS.items():
        add(sub.add_parser(name, help=help_))


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen model's trainer."""
    return TARGETS[args.model][1](args)
