"""``brain-tumor calibrate classification STUDIES``: fit temperature and OOD thresholds post hoc.

For existing classification weights (shipped or published), runs the inference path on the
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
import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Model, datastore, kind, weights location, thresholds."""
    from ..training.calibration import DEFAULT_ACCEPTANCE, DEFAULT_MAX_PROBABILITY_MIN

    p.add_argument("model", choices=("classification",), help="which model to calibrate")
    p.add_argument("studies", type=Path, metavar="STUDIES", help="labelled datastore of held-out validation cases")
    p.add_argument("--kind", choices=("2d", "3d", "both"), default="both", help="which classifier(s)")
    p.add_argument("--weights-dir", type=Path, metavar="DIR", help="weights folder (default: shipped model_weights/)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write a copy + calibrated sidecar here")
    p.add_argument("--split", choices=("all", "val"), default="all",
                   help="val: only the validation ids the training run recorded in the sidecar")  # fmt: skip
    p.add_argument("--acceptance", type=float, default=DEFAULT_ACCEPTANCE,
                   help=f"share of validation cases the energy check accepts ({DEFAULT_ACCEPTANCE})")  # fmt: skip
    p.add_argument("--max-probability-min", type=float, default=DEFAULT_MAX_PROBABILITY_MIN,
                   help=f"calibrated top probability below which an answer is low-confidence "
                        f"(default {DEFAULT_MAX_PROBABILITY_MIN})")  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast on the CPU")


def write_calibration(weights: Path, record: dict[str, Any], out_dir: Path | None = None) -> dict[str, Any]:
    """Put ``record`` into the sidecar of ``weights`` (in place, or beside a copy in ``out_dir``).

    Refuses a pair whose weights do not match the sidecar's sha256. Returns the new sidecar.
    """
    from ..layout import atomic_write_json
    from ..networks.checkpoint import load_model, sidecar_path
    from ..training.calibration import calibrated_version, strip_calibration_suffix

    load_model(weights, "classification")  # refuses a pair whose weights do not match the sidecar's sha256
    meta = json.loads(sidecar_path(weights).read_text(encoding="utf-8"))
    target = weights
    if out_dir is not None and Path(out_dir).resolve() != weights.parent.resolve():
        target = Path(out_dir) / weights.name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.copyfile(weights, tmp)
        os.replace(tmp, target)
    base = strip_calibration_suffix(str(meta.get("version", "unknown")))
    meta["calibration"] = {**record, "base_version": base}
    meta["version"] = calibrated_version(base, record)
    atomic_write_json(sidecar_path(target), meta)
    logger.info("calibrated %s: temperature %.3f, version %s", sidecar_path(target), record["temperature"],
                meta["version"])  # fmt: skip
    return meta


def _answers(args: argparse.Namespace, classifier: Any, kind: str) -> list[Any]:
    """In-class answers on the calibration cases (restricted to the sidecar's val ids with --split val)."""
    from ..labels import TUMOR_CLASSES
    from ..training.class_eval import collect_answers

    answers = [a for a in collect_answers(classifier, args.studies, kind) if a.true_type in TUMOR_CLASSES]
    if args.split == "val":
        val_ids = set(((classifier.stores[kind].get().meta.get("training") or {}).get("data") or {}).get("val_ids", []))
        if not val_ids:
            raise ValueError(f"{kind}: the sidecar records no validation ids; use --split all on held-out cases")
        answers = [a for a in answers if a.case_id in val_ids]
    if not answers:
        raise ValueError(f"no labelled {kind} cases to calibrate on in {args.studies}")
    return answers


def calibrate_kind(args: argparse.Namespace, classifier: Any, kind: str, weights_dir: Path) -> dict[str, Any]:
    """Fit and write the calibration of one classifier; returns the new sidecar."""
    from collections import Counter

    from ..labels import TUMOR_CLASSES
    from ..layout import CLASS_WEIGHTS
    from ..training.calibration import calibration_record

    answers = _answers(args, classifier, kind)
    logits = np.array([a.result.logits for a in answers])
    labels = np.array([TUMOR_CLASSES.index(a.true_type) for a in answers])
    groups = sorted({a.group for a in answers})
    fitted_on = {"studies": str(Path(args.studies).resolve()), "split": args.split, "n": len(answers),
                 "n_patients": len(groups), "class_counts": dict(Counter(a.true_type for a in answers)),
                 "groups": groups, "image_sha256": sorted(a.image_sha for a in answers)}  # fmt: skip
    command = (f"brain-tumor calibrate classification {shlex.quote(str(args.studies))} --kind {kind} "
               f"--split {args.split} --acceptance {args.acceptance:g} --max-probability-min "
               f"{args.max_probability_min:g}")  # fmt: skip
    features = np.array([a.result.features for a in answers]) if all(a.result.features for a in answers) else None
    record = calibration_record(logits, labels, acceptance=args.acceptance,
                                max_probability_min=args.max_probability_min, fitted_on=fitted_on,
                                command=command, features=features)  # fmt: skip
    return write_calibration(weights_dir / CLASS_WEIGHTS[kind], record, args.out)


def run(args: argparse.Namespace) -> int:
    """Calibrate the chosen classifier(s)."""
    from ..config import default_weights_dir
    from ..inference.classifier import build_classifier
    from ..networks.store import ModelUnavailable
    from ..runtime import pick_device, use_reduced_precision

    weights_dir = Path(args.weights_dir or default_weights_dir())
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
