"""``brain-tumor train MODEL STUDIES``: train or fine-tune a model from a datastore folder.

The flags become one ``TrainOptions`` and ``run_training`` does the rest -- the same call
the server's *Train* makes. ``--init auto`` (the default) fine-tunes the model the server
would serve now: the datastore's published weights, else the shipped demo weights, else
it trains from scratch. Under ``torchrun`` (several nodes) every process runs this same
command; see the README's cluster section. Exit codes: 0 done, 3 stopped, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..layout import LESION_TYPE_WEIGHTS, SEG_WEIGHTS
from .train_common import add_common_arguments, options_from_args

logger = logging.getLogger(__name__)


def add_segmentation_arguments(p: argparse.ArgumentParser) -> None:
    """Options specific to the 3D region segmentation network."""
    add_common_arguments(p, SEG_WEIGHTS)
    p.add_argument("--spacing", type=float, help="working spacing in mm, from scratch only (default: config 2)")
    p.add_argument("--patch", type=int, help="cubic training patch in voxels, multiple of 16 (default: 96 at 2 mm, "
                   "128 finer)")  # fmt: skip
    p.add_argument("--samples-per-epoch", type=int, help="patches per epoch (default: max(cases, 16))")
    p.add_argument("--fg-fraction", type=float, help="share of patches centred on tumour (default: 0.5)")
    p.add_argument("--schedule", choices=("cosine", "warmup_cosine", "plateau"),
                   help="learning-rate schedule (default: cosine)")  # fmt: skip
    p.add_argument("--allow-missing-sequences", action="store_true", help="zero-fill missing sequences")
    p.add_argument("--no-adapt", action="store_true", help="fine-tune plainly, without the site-adaptation "
                   "recipe and its cross-validated publish decision (on by default, as in the server)")  # fmt: skip
    p.add_argument("--cv-folds", type=int, help="site adaptation: cross-validation folds (default: config 3)")
    p.add_argument("--adapt-minutes", type=float, help="site adaptation: wall-time budget of all its runs")


def add_classification_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the 2D/3D tumour-type classifiers (names match the segmentation target's)."""
    add_common_arguments(p, "classification_<kind>.pt", out_is_dir=True)
    p.add_argument("--kind", choices=("2d", "3d", "both"), default="both", help="which model(s) to train")
    p.add_argument("--input-size", type=int, help="from scratch: square/cube input size (default: 128 2D, 48 3D)")
    p.add_argument("--spacing", type=float, help="from scratch: 3D working spacing in mm (default: 4)")


def run_model(args: argparse.Namespace) -> int:
    """Build the options from the flags, train, and report; exit 3 when stopped."""
    from ..training.cache_file import CacheError
    from ..training.launch import stop_on_sigterm
    from ..training.run import run_training

    opts = options_from_args(args, args.model)
    try:
        with stop_on_sigterm() as should_stop:
            result = run_training(opts, should_stop)
    except CacheError as exc:
        logger.error("%s", exc)
        return 1
    brief = {k: v for k, v in result.to_dict().items() if k not in ("history", "validation", "parts")}
    logger.info("result: %s", json.dumps(brief, default=str))
    return 3 if result.status == "stopped" else 0


def add_lesion_type_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the lesion-feature 3D tumour-type model (``training/lesion_type_fit.py``)."""
    p.add_argument("studies", type=Path, metavar="STUDIES", help="datastore folder with 3D cases and tumour types")
    p.add_argument("--out", type=Path, help=f"model file (default: STUDIES/model/{LESION_TYPE_WEIGHTS})")
    p.add_argument("--weights-dir", type=Path, help="segmentation weights to describe the cases with "
                   "(default: the datastore's published model, else model_weights/)")  # fmt: skip
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds that fit the temperature (default 5)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the coefficients (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="fold assignment seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def run_lesion_type(args: argparse.Namespace) -> int:
    """Segment and describe the labelled 3D cases, fit, calibrate, write the model."""
    from ..config import AppConfig
    from ..inference.lesion_type import save_lesion_type
    from ..inference.served import ServedModels
    from ..layout import published_dir
    from ..training.lesion_type_fit import describe_cases, fit_lesion_type

    cfg = AppConfig.from_conf({"device": args.device}, None, args.studies, args.weights_dir)
    segmenter = ServedModels(cfg).segmenter()
    features = describe_cases(args.studies, segmenter)
    source = f"{args.studies.name}: {len(features.y)} cases, segmentation {segmenter.store.get().version}"
    model = fit_lesion_type(features, args.folds, args.seed, args.l2, source)
    out = args.out or published_dir(args.studies) / LESION_TYPE_WEIGHTS
    save_lesion_type(model, out)
    logger.info("wrote %s (version %s)", out, model.version)
    return 0


#: Trainable models: name -> (add arguments, help).
TARGETS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "segmentation": (add_segmentation_arguments, "3D U-Net for WT/TC/ET regions"),
    "classification": (add_classification_arguments, "2D and 3D tumour-type classifiers"),
    "lesion-type": (add_lesion_type_arguments, "3D tumour type from the segmentation's lesion features"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per trainable model."""
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (add, help_) in TARGETS.items():
        add(sub.add_parser(name, help=help_))


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen model's run."""
    if args.model == "lesion-type":
        return run_lesion_type(args)
    return run_model(args)
