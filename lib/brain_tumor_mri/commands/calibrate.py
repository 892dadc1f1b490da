"""``brain-tumor calibrate classification|segmentation STUDIES``: fit what is fitted after training.

Segmentation: runs the served pipeline without post-processing on the labelled cases of
STUDIES and fits the low-confidence component filter (``training/postprocess_fit.py``) into
the sidecar, with a ``-pp<digest>`` version suffix. ``--mirror-axes 0,1,2`` (or ``none``)
also sets the test-time mirroring the weights are served with, and the filter is fitted on
its probabilities.

Classification: for existing classification weights (shipped or published), runs the inference path on the
labelled cases of STUDIES, fits the temperature (``training/calibration.py``) and the
energy threshold of the low-confidence signal, and writes them into the weights' sidecar
as its ``calibration`` block. The weights file is not touched, so its sha256 stays valid;
the sidecar is replaced atomically and its ``version`` gets a ``-cal<digest>`` suffix, so
served answers (``model_version``) show that the calibration changed. A running server
picks the new sidecar up on its next request (``ModelStore`` watches both files).

STUDIES must be held-out validation cases, never the training cases (their logits are
over-fitted). ``--split val`` keeps only the validation ids recorded in the sidecar by the
training run (the "validation split" of that run); ``--split all`` uses every labelled case.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Model, datastore, kind, weights location, thresholds."""
    from ..training.calibration import DEFAULT_ACCEPTANCE, DEFAULT_MAX_PROBABILITY_MIN

    p.add_argument("model", choices=("classification", "segmentation"), help="which model to calibrate")
    p.add_argument("studies", type=Path, metavar="STUDIES", help="labelled datastore of held-out validation cases")
    p.add_argument("--kind", choices=("2d", "3d", "both"), default="both", help="which classifier(s) (classification)")
    p.add_argument("--weights-dir", type=Path, metavar="DIR", help="weights folder (default: shipped model_weights/)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write a copy + calibrated sidecar here")
    p.add_argument("--split", choices=("all", "val"), default="all",
                   help="val: only the validation ids the training run recorded in the sidecar")  # fmt: skip
    p.add_argument("--acceptance", type=float, default=DEFAULT_ACCEPTANCE,
                   help=f"share of validation cases the energy check accepts ({DEFAULT_ACCEPTANCE})")  # fmt: skip
    p.add_argument("--max-probability-min", type=float, default=DEFAULT_MAX_PROBABILITY_MIN,
                   help=f"calibrated top probability below which an answer is low-confidence "
                        f"(default {DEFAULT_MAX_PROBABILITY_MIN})")  # fmt: skip
    p.add_argument("--mirror-axes", metavar="AXES", type=_mirror_axes,
                   help="segmentation: test-time mirroring to serve with, e.g. 0,1,2 or none (default: keep the "
                        "sidecar's)")  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast on the CPU")


def _mirror_axes(text: str) -> tuple[int, ...]:
    """``none`` or comma-separated spatial axes (0-2) -> sorted axes; argparse reports a ValueError as usage."""
    from ..inference.inferer import parse_mirror_axes

    if text.strip().lower() == "none":
        return ()
    try:
        return parse_mirror_axes([a for a in text.split(",") if a.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def calibrate_kind(args: argparse.Namespace, classifier: Any, kind: str, weights_dir: Path) -> dict[str, Any]:
    """Fit and write the calibration of one classifier; returns the new sidecar."""
    from ..layout import CLASS_WEIGHTS
    from ..training.calibrate_weights import calibrate_weights

    return calibrate_weights(classifier, args.studies, kind, weights_dir / CLASS_WEIGHTS[kind], split=args.split,
                             acceptance=args.acceptance, max_probability_min=args.max_probability_min,
                             out_dir=args.out)  # fmt: skip


def calibrate_segmentation(args: argparse.Namespace, weights_dir: Path) -> int:
    """Fit the segmentation weights' low-confidence component filter on STUDIES' labelled cases."""
    from ..layout import SEG_WEIGHTS
    from ..networks.checkpoint import load_model
    from ..runtime import pick_device, use_reduced_precision
    from ..training.calibrate_weights import recorded_val_ids
    from ..training.cases import segmentation_cases
    from ..training.postprocess_fit import fit_weights

    device = pick_device(args.device)
    weights = weights_dir / SEG_WEIGHTS
    try:
        meta = load_model(weights, "segmentation").meta
    except (OSError, ValueError) as exc:  # missing or mismatched pair
        raise ValueError(f"segmentation weights in {weights_dir}: {exc}") from exc
    specs = segmentation_cases(args.studies)
    if args.split == "val":
        val_ids = recorded_val_ids(meta)
        if not val_ids:
            raise ValueError("segmentation: the sidecar records no validation ids; use --split all on held-out cases")
        specs = [s for s in specs if s.case_id in val_ids]
    fitted_on = {"studies": str(Path(args.studies).resolve()), "split": args.split}
    command = f"brain-tumor calibrate segmentation {args.studies} --split {args.split}"
    if args.mirror_axes is not None:
        command += " --mirror-axes " + (",".join(map(str, args.mirror_axes)) or "none")
    new = fit_weights(weights, specs, device, use_reduced_precision(device, args.bf16), fitted_on, command, args.out,
                      args.mirror_axes)  # fmt: skip
    fit = new["postprocess"]["fit"]
    logger.info("segmentation: mirror axes %s, thresholds %s, mean Dice %.4f -> %.4f on %d case(s); version %s",
                new["postprocess"]["mirror_axes"] or "none", new["postprocess"]["min_mean_prob"] or "none",
                fit["dice_before"]["mean"], fit["dice_after"]["mean"], fit["n"], new["version"])  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    """Calibrate the chosen model."""
    from ..config import default_weights_dir
    from ..inference.classifier import build_classifier
    from ..networks.store import ModelUnavailable
    from ..runtime import pick_device, use_reduced_precision

    weights_dir = Path(args.weights_dir or default_weights_dir())
    if args.model == "segmentation":
        return calibrate_segmentation(args, weights_dir)
    device = pick_device(args.device)
    classifier = build_classifier(weights_dir, device, use_reduced_precision(device, args.bf16))
    for kind in ("2d", "3d") if args.kind == "both" else (args.kind,):
        if not classifier.available(kind):
            raise ValueError(f"no {kind} classification weights in {weights_dir}")
        try:
            classifier.stores[kind].get()
        except ModelUnavailable as exc:  # e.g. weights that do not match the sidecar's sha256
            raise ValueError(f"{kind}: {exc}") from exc
        meta = calibrate_kind(args, classifier, kind, weights_dir)
        fit = meta["calibration"]["fit"]
        logger.info("%s: T = %.3f, NLL %.4f -> %.4f, ECE %.4f -> %.4f on %d case(s); energy threshold %.3f",
                    kind, meta["calibration"]["temperature"], fit["nll_before"], fit["nll_after"], fit["ece_before"],
                    fit["ece_after"], fit["n"], meta["calibration"]["ood"]["energy_max"])  # fmt: skip
    return 0
