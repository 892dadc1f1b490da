"""``run_training(options)``: the one entry point of every training run.

The server's train task, ``brain-tumor train`` and the launchers all call it with a
``TrainOptions``. It resolves the model to fine-tune, lists and splits the datastore's
cases (plus an optional replay source), runs each model on the engine (``run_model``)
and writes ``result.json`` into the run folder. What a run publishes is written into its
run folder first (``staged/``), gets its post-hoc fit there (segmentation post-processing,
classifier calibration) and only then is copied where the server reads it. With ``nproc > 1`` (and no process group
yet) it re-launches itself as that many data-parallel processes on this node
(``launch``); under ``torchrun`` each process joins the group from its environment, so
the same code trains across nodes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .. import layout
from ..imageio import InputError
from ..layout import CLASS_WEIGHTS, LESION_TYPE_WEIGHTS, SEG_WEIGHTS
from . import distributed as ddp
from .cases import (
    REPLAY,
    CaseSpec,
    class_counts,
    classification_cases,
    segmentation_cases,
    split_by_group,
    split_segmentation,
)
from .class_model import ClassModel
from .options import TrainOptions
from .publish import PublishRule, beats_initial
from .result import TrainResult
from .run_model import run_model
from .seg_model import SegModel

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


def resolve_init(choice: str, published: Path, shipped: Path) -> Path | None:
    """``auto`` -> published, else shipped, else None; ``none`` -> None; else that file."""
    if choice == "none":
        return None
    if choice == "auto":
        return next((p for p in (published, shipped) if p.is_file() and p.with_suffix(".json").is_file()), None)
    path = Path(choice)
    if not path.is_file():
        raise ValueError(f"--init {choice}: weights file not found")
    return path


def default_run_dir(opts: TrainOptions) -> Path:
    """``STUDIES/model/runs/<model>-<time>`` unless the options name one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return opts.run_dir or layout.published_dir(opts.studies) / "runs" / f"{opts.model}-{stamp}"


def run_training(
    opts: TrainOptions,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    publish_rule: PublishRule = beats_initial,
) -> TrainResult:
    """Train ``opts.model`` and publish what improved; ``result.json`` lands in the run folder."""
    opts = opts.checked()
    joined = ddp.init_from_env(opts.device)
    try:
        if opts.nproc > 1 and not ddp.is_distributed():
            return _spawn(opts)
        run_dir = default_run_dir(opts)
        if opts.model == "segmentation":
            result = _segmentation(opts, run_dir, progress, should_stop, publish_rule)
        else:
            result = _classification(opts, run_dir, progress, should_stop, publish_rule)
        if ddp.is_main():
            result.write(run_dir / "result.json")
            logger.info("result: %s (%s)", result.status, result.decision)
        return result
    finally:
        if joined:
            dist.destroy_process_group()


def _spawn(opts: TrainOptions) -> TrainResult:
    """Re-run as ``opts.nproc`` ranks on this node sharing one run folder; rank 0's result."""
    from .launch import launch

    fixed = opts.replace(run_dir=default_run_dir(opts))
    if opts.model == "segmentation":  # every rank must fine-tune the same file, even if one is published meanwhile
        init = _init_for(opts, SEG_WEIGHTS)
        fixed = fixed.replace(init=str(init) if init else "none")
    if not launch(run_training, fixed):
        raise RuntimeError(f"{opts.model} training: a worker process failed (see the log above)")
    assert fixed.run_dir is not None
    return TrainResult.from_dict(json.loads((fixed.run_dir / "result.json").read_text(encoding="utf-8")))


def _init_for(opts: TrainOptions, weights: str) -> Path | None:
    """The weights a run fine-tunes (for one weights file name), resolved from ``opts.init``."""
    return resolve_init(opts.init, layout.published_dir(opts.studies) / weights, opts.weights_dir / weights)


def _segmentation(
    opts: TrainOptions, run_dir: Path, progress: Progress | None, should_stop: Callable[[], bool] | None,
    rule: PublishRule,
) -> TrainResult:  # fmt: skip
    """One segmentation run over the datastore's labelled 3D cases (site adaptation when asked and fine-tuning)."""
    init = _init_for(opts, SEG_WEIGHTS)
    out = opts.out or layout.published_dir(opts.studies) / SEG_WEIGHTS
    staged = _staged(run_dir, SEG_WEIGHTS)
    if opts.adapt and init is not None:
        from .adapt_run import run_adaptation

        adapted = run_adaptation(opts, init, run_dir, staged, progress, should_stop)
        if adapted.published and ddp.is_main():
            _postprocess(opts, staged, adapted, [], init)
            _promote(staged, out, adapted)
        return adapted
    model = SegModel(opts, init)
    specs = segmentation_cases(opts.studies)
    if not specs:
        raise InputError(f"{opts.studies}: no 3D cases with a final label (labels/final/<id>.nii.gz)")
    train, val = split_segmentation(specs, opts.val_fraction, opts.seed)
    replay = segmentation_cases(opts.replay_studies, REPLAY) if opts.replay_studies else []
    result = run_model(model, opts, (train, val, replay), staged, run_dir, progress, should_stop, rule)
    if result.published and ddp.is_main():
        _postprocess(opts, staged, result, val, init)
        _promote(staged, out, result)
    return result


def _staged(run_dir: Path, name: str) -> Path:
    """Where a run writes the weights it publishes until their post-hoc fit is in the sidecar (``_promote``)."""
    return run_dir / "staged" / name


def _promote(staged: Path, out: Path, result: TrainResult) -> None:
    """Put the staged, fitted weights where the server reads them (``networks.checkpoint.promote``)."""
    from ..networks.checkpoint import promote

    promote(staged, out)
    result.publish_path = str(out)


def _classification(
    opts: TrainOptions, run_dir: Path, progress: Progress | None, should_stop: Callable[[], bool] | None,
    rule: PublishRule,
) -> TrainResult:  # fmt: skip
    """One run per input kind (2D slices, 3D cases); the combined result."""
    parts: dict[str, TrainResult] = {}
    for kind in opts.kinds:
        specs = classification_cases(opts.studies, kind)
        if len({s.target for s in specs}) < 2:
            logger.info("classification %s: skipped, fewer than two classes labelled in %s", kind, opts.studies)
            continue
        init = _init_for(opts, CLASS_WEIGHTS[kind])
        train, val = split_by_group(specs, opts.val_fraction, opts.seed)
        replay = classification_cases(opts.replay_studies, kind, REPLAY) if opts.replay_studies else []
        logger.info("classification %s: train %s, validation %s", kind, class_counts(train), class_counts(val))
        out = (opts.out or layout.published_dir(opts.studies)) / CLASS_WEIGHTS[kind]
        staged = _staged(run_dir / kind, CLASS_WEIGHTS[kind])
        parts[kind] = run_model(ClassModel(opts, init, kind), opts, (train, val, replay), staged, run_dir / kind,
                                progress, should_stop, rule)  # fmt: skip
        if parts[kind].published and ddp.is_main():
            if val:
                _calibrate(opts, kind, staged, parts[kind])
            _promote(staged, out, parts[kind])
        if parts[kind].status == "stopped":
            break
    if not parts:
        raise InputError(f"{opts.studies}: no kind with labelled cases of at least two tumour types")
    if "3d" in opts.kinds and ddp.is_main() and not any(r.status == "stopped" for r in parts.values()):
        lesion = _lesion_type(opts)
        if lesion is not None:
            parts["lesion_type"] = lesion
    return combine(parts, run_dir)


def _lesion_type(opts: TrainOptions) -> TrainResult | None:
    """Refit the lesion-feature 3D type model on the served segmentation's outlines (``lesion_type_fit.refit``)."""
    from ..inference.lesion_type import lesion_type_store
    from ..inference.segmenter import Segmenter, segmentation_store
    from ..runtime import pick_device, use_reduced_precision
    from .lesion_type_fit import refit

    device = pick_device(opts.device)
    reduced = use_reduced_precision(device, opts.bf16)
    store = segmentation_store(opts.studies, opts.weights_dir, device, reduced)
    if not store.available():
        logger.info("lesion-type model: not refitted, no segmentation model to describe the cases with")
        return None
    served = lesion_type_store(opts.studies, opts.weights_dir).get()
    out = (opts.out or layout.published_dir(opts.studies)) / LESION_TYPE_WEIGHTS
    segmenter = Segmenter(store, opts.spacing, reduced, opts.infer_memory_mb)
    return refit(opts.studies, segmenter, served, out, opts.seed)


def _postprocess(
    opts: TrainOptions, weights: Path, result: TrainResult, val: list[CaseSpec], init: Path | None
) -> None:
    """Fit the published segmentation's component filter on the run's validation cases, or carry the initial one's.

    A site adaptation's only held-out cases are original-domain replay checks, and a small
    datastore's validation split is a handful of cases, so both keep the initial model's filter.
    """
    from ..runtime import pick_device, use_reduced_precision
    from .postprocess_fit import MIN_CASES, carry_postprocess, fit_weights

    meta: dict[str, Any] | None = None
    if len(val) >= MIN_CASES:
        device = pick_device(opts.device)
        fitted_on = {"studies": str(Path(opts.studies).resolve()), "split": "val"}
        meta = fit_weights(weights, val, device, use_reduced_precision(device, opts.bf16), fitted_on,
                           f"{opts.to_command()} (validation split of the run)")  # fmt: skip
    else:
        meta = carry_postprocess(weights, init)
    if meta is not None:
        result.version = meta["version"]


def _calibrate(opts: TrainOptions, kind: str, weights: Path, result: TrainResult) -> None:
    """Fit the published classifier's temperature and low-confidence thresholds on this run's validation cases."""
    from ..inference.classifier import build_classifier
    from ..runtime import pick_device, use_reduced_precision
    from .calibrate_weights import calibrate_weights

    device = pick_device(opts.device)
    classifier = build_classifier(weights.parent, device, use_reduced_precision(device, opts.bf16))
    meta = calibrate_weights(classifier, opts.studies, kind, weights, split="val")
    result.version = meta["version"]


def combine(parts: dict[str, TrainResult], run_dir: Path) -> TrainResult:
    """One result for several input kinds: stopped if any stopped, mean best metric, each kind's result.

    With a single kind its best epoch, baseline and publish path carry over; with several there is no one best epoch
    (0) or path (None), and each kind's stands in ``parts``.
    """
    res = list(parts.values())
    one = res[0] if len(res) == 1 else None
    metrics = [r.best_metric for r in res if r.best_metric is not None]
    status = "stopped" if any(r.status == "stopped" for r in res) else res[-1].status
    return TrainResult(
        status, any(r.published for r in res), "; ".join(f"{k}: {r.decision}" for k, r in parts.items()),
        one.publish_path if one else None,
        ", ".join(f"{k}: {r.version}" for k, r in parts.items() if r.version) or None,
        sum(r.epochs_run for r in res), one.best_epoch if one else 0,
        sum(metrics) / len(metrics) if metrics else None, one.baseline_metric if one else None,
        {k: r.val_metrics for k, r in parts.items()}, round(sum(r.seconds for r in res), 1),
        decision_basis={k: r.decision_basis for k, r in parts.items()}, run_dir=str(run_dir),
        parts={k: {x: y for x, y in r.to_dict().items() if x not in ("history", "validation")}
               for k, r in parts.items()},
    )  # fmt: skip
