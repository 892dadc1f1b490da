"""One model's run on the engine: cache its cases, train, validate, decide, publish.

``run_model`` strings the stages together for any model's parts (``seg_model``,
``class_model``): the preprocessed-case cache and the stores a run reads from (``cache``,
``store``), the streaming DataLoader (``datasets``, ``sampler``), the loop (``engine``),
the publish decision (``publish``) and the run record (``runlog``). Called by
``run.run_training``, once per model (classification: once per input kind).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import layout
from ..imageio import InputError
from ..networks.checkpoint import save_model
from . import distributed as ddp
from .cache import CaseCache
from .cases import CaseSpec
from .class_model import ClassModel
from .datasets import auto_workers, make_loader
from .engine import LoopResult, LoopSettings, ModelParts, train_loop
from .options import TrainOptions
from .publish import DecisionInput, PublishRule, beats_initial, decide
from .result import TrainResult
from .runlog import RunLog, plot_curves
from .sampler import PlanSampler
from .seg_model import SegModel
from .step import auto_batch_size, make_context, run_device
from .store import CaseStore, open_store

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
Model = SegModel | ClassModel


def _open_data(
    model: Model, opts: TrainOptions, sets: tuple[list[CaseSpec], list[CaseSpec], list[CaseSpec]],
    should_stop: Callable[[], bool] | None,
) -> tuple[CaseStore, CaseStore, dict[str, Any]] | None:  # fmt: skip
    """Cache every case and open the training (+ replay) and validation stores; None if stopped."""
    train, val, replay = sets
    root = opts.cache_dir or layout.published_dir(opts.studies) / "cache"
    cache = CaseCache(root, model.family)
    workers = auto_workers(opts.workers)
    share = (ddp.local_rank(), ddp.local_world_size()) if ddp.is_distributed() else (0, 1)
    sync = ddp.barrier if ddp.is_distributed() else None
    store, report = open_store(cache, train + val + replay, opts.cache_ram_mb, workers, should_stop, share, sync)
    if should_stop is not None and should_stop():
        return None
    index = {(s.origin, s.case_id): i for i, s in enumerate(store.specs)}
    pick = lambda specs: [index[(s.origin, s.case_id)] for s in specs if (s.origin, s.case_id) in index]  # noqa: E731
    train_store = store.subset(pick(train) + pick(replay))
    val_store = store.subset(pick(val))
    n_train = len(pick(train))
    if n_train == 0:
        raise InputError("no readable training cases")
    if len(val_store) == 0:
        logger.warning("no validation cases: validating on the training cases")
        val_store = store.subset(pick(train))
    info = {"folder": report.folder, "hits": report.hits, "built": report.built, "rebuilt": report.rebuilt,
            "seconds": report.seconds, "entries_mb": report.entries_mb, "folder_mb": report.folder_mb,
            "in_memory": report.in_memory, "notes": report.notes, "n_train": n_train}  # fmt: skip
    return train_store, val_store, info


def _parts(model: Model, opts: TrainOptions, train_store: CaseStore, val_store: CaseStore, n_train: int,
           batch: int, device: torch.device) -> ModelParts:  # fmt: skip
    """The engine's view of ``model``: its DataLoader, loss, target and validation."""
    train_specs = train_store.specs[:n_train]
    sampler = PlanSampler(model.plan(train_specs, len(train_store) - n_train), model.samples_per_epoch(n_train),
                          ddp.rank(), ddp.world_size())  # fmt: skip
    loader = make_loader(model.dataset(train_store), sampler, batch, auto_workers(opts.workers), device)
    return ModelParts(model.tag, loader, sampler, model.target, model.loss,
                      lambda net, ctx: model.validate(net, val_store, ctx), model.val_keys, model.metric_name,
                      model.min_batch)  # fmt: skip


def _batch_size(model: Model, opts: TrainOptions, net: torch.nn.Module, ctx: Any) -> int:
    """The option's batch size, else the CPU default, else (CUDA) the largest that fits on every rank."""
    plain = ddp.unwrap(net)

    def trial(b: int) -> None:
        """One forward/backward of ``b`` dummy samples, gradients discarded."""
        x, y = model.trial_input(b)
        from ..runtime import autocast

        with autocast(ctx.device, ctx.reduced):
            out = plain(ctx.to_device(x))
        model.loss(out.float(), model.target(y, ctx)).backward()
        plain.zero_grad(set_to_none=True)

    return ddp.min_over_ranks(auto_batch_size(opts.batch_size, model.cpu_batch, trial, ctx.device))


def run_model(
    model: Model, opts: TrainOptions, sets: tuple[list[CaseSpec], list[CaseSpec], list[CaseSpec]],
    publish_to: Path, run_dir: Path, progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None, publish_rule: PublishRule = beats_initial,
) -> TrainResult:  # fmt: skip
    """Cache the (train, val, replay) cases, then ``train_stores``; the result (written by rank 0)."""
    start = time.monotonic()
    opened = _open_data(model, opts, sets, should_stop)
    if opened is None:
        return _stopped(start, run_dir)
    train_store, val_store, cache_info = opened
    return train_stores(model, opts, (train_store, val_store, cache_info), publish_to, run_dir, progress,
                        should_stop, publish_rule, start)  # fmt: skip


def train_stores(
    model: Model, opts: TrainOptions, data: tuple[CaseStore, CaseStore, dict[str, Any]], publish_to: Path,
    run_dir: Path, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
    publish_rule: PublishRule = beats_initial, start: float | None = None,
) -> TrainResult:  # fmt: skip
    """Train, validate, decide and publish on opened stores (``data[2]["n_train"]`` primary cases first)."""
    start = time.monotonic() if start is None else start
    train_store, val_store, cache_info = data
    device = run_device(opts.device)
    network = model.build_network()
    amp = opts.amp and (device.type != "cpu" or model.cpu_bf16_fits())
    net, ctx = make_context(network, device, amp, opts.bf16, model.lr(), model.weight_decay(), model.channels_last_3d)
    batch = _batch_size(model, opts, net, ctx)
    parts = _parts(model, opts, train_store, val_store, cache_info["n_train"], batch, device)
    initial = None
    if model.init is not None:
        initial = ddp.from_main(model.validate(ddp.unwrap(net), val_store, ctx) if ddp.is_main() else None)
        assert initial is not None  # rank 0 validated and broadcast
        logger.info("initial model: validation %s %.4f", model.metric_name, initial.metric)
    log = RunLog(run_dir, model.val_keys, model.tag) if ddp.is_main() else None
    logger.info("%s: training on %d cases, validating on %d, batch %d; run dir %s", model.tag,
                cache_info["n_train"], len(val_store), batch, run_dir)  # fmt: skip
    settings = LoopSettings(opts.epochs, opts.patience, opts.max_minutes * 60, _schedule(model, opts),
                            opts.final_only)  # fmt: skip
    try:
        loop = train_loop(parts, net, ctx, settings, log, progress, should_stop)
    finally:
        if log is not None:
            log.close()
    result = _record(model, opts, loop, initial, start, cache_info, batch)
    result.run_dir = str(run_dir)
    if ddp.is_main():
        plot_curves(loop.history, run_dir / "curves.png", model.curve_keys, model.metric_name,
                    None if initial is None else initial.metric)  # fmt: skip
        _decide_and_publish(model, opts, loop, initial, result, publish_to, publish_rule)
    else:
        result.decision = f"rank {ddp.rank()}: rank 0 decides and publishes"
    return result


def _schedule(model: Model, opts: TrainOptions) -> str:
    """Segmentation follows ``--schedule``; classification warms up, then decays."""
    return opts.schedule if isinstance(model, SegModel) else model.schedule_default


def _stopped(start: float, run_dir: Path) -> TrainResult:
    """The result of a run stopped while its cases were being prepared."""
    return TrainResult("stopped", False, "not published: stop requested", None, None, 0, 0, None, None, {},
                       round(time.monotonic() - start, 1), run_dir=str(run_dir))  # fmt: skip


def _record(model: Model, opts: TrainOptions, loop: LoopResult, initial: Any, start: float, cache_info: dict[str, Any],
            batch: int) -> TrainResult:  # fmt: skip
    """The run's result before the publish decision."""
    best = loop.best.scores
    hist = loop.history
    first = loop.first_step_at
    timings = {
        "first_step_s": None if first is None else round(first - start, 2),
        "first_step_unix": None if first is None else time.time() - (time.monotonic() - first),
        "data_s": round(sum(r["data_s"] for r in hist), 2), "step_s": round(sum(r["step_s"] for r in hist), 2),
        "val_s": round(sum(r["val_s"] for r in hist), 2), "batch_size": batch, "world_size": ddp.world_size(),
        "samples_per_epoch": model.samples_per_epoch(cache_info["n_train"]),
    }  # fmt: skip
    validation = {"initial": None if initial is None else initial.per_case,
                  "trained": None if best is None else best.per_case}  # fmt: skip
    return TrainResult(
        loop.status, False, "", None, None, len(hist), loop.best.epoch, None if best is None else best.metric,
        None if initial is None else initial.metric, {} if best is None else best.summary,
        round(time.monotonic() - start, 1), hist, validation=validation, cache=cache_info, timings=timings,
    )  # fmt: skip


def _decide_and_publish(
    model: Model, opts: TrainOptions, loop: LoopResult, initial: Any, result: TrainResult, publish_to: Path,
    rule: PublishRule,
) -> None:  # fmt: skip
    """Apply the publish rule; write the best epoch atomically when it says so."""
    decision = decide(rule, DecisionInput(loop.status, initial, loop.best.scores, loop.best.epoch, model.metric_name))
    result.decision, result.decision_basis = decision.reason, decision.basis
    if not decision.publish or loop.best.state is None:
        return
    training = {
        "epochs": result.epochs_run, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
        "baseline_metric": result.baseline_metric, "val_metrics": result.val_metrics, "status": result.status,
        "decision": decision.reason, "decision_basis": decision.basis, "n_train": result.cache.get("n_train"),
        "val_cases": sorted((loop.best.scores.per_case if loop.best.scores else {}).keys()),
        "seconds": result.seconds, "world_size": ddp.world_size(), "batch_size": result.timings.get("batch_size"),
        "command": opts.to_command(), "options": opts.to_record(),
    }  # fmt: skip
    meta = save_model(model.publishable(loop.best.state), publish_to, model.sidecar(training))
    result.published, result.publish_path, result.version = True, str(publish_to), meta["version"]
