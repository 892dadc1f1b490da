"""Simulated annotation loop: does an uncertainty strategy reach a Dice with fewer labels?

Every round a strategy picks ``batch`` cases from the unlabelled pool, their ground truth
is "revealed" (the simulated annotator labels them), the model is fine-tuned briefly with
the app's training loop (the initial model with its full training run), and Dice (mean of
WT/TC/ET) is measured on a fixed held-out set. The picking runs the app's own code: the
``Random`` and ``UncertaintyStrategy`` strategies over an in-memory datastore, with scores
from ``uncertainty.case_uncertainty`` stored by ``scoring.merge_score`` exactly as the
scoring methods store them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brain_tumor_mri.activelearning.pool import Reservations
from brain_tumor_mri.activelearning.uncertainty import case_uncertainty
from brain_tumor_mri.inference.segmenter import Segmenter
from brain_tumor_mri.labels import label_to_regions, regions_to_label
from brain_tumor_mri.networks.checkpoint import load_model, save_model
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.runtime import to_memory_format, use_reduced_precision
from brain_tumor_mri.server.scoring import merge_score, served_version
from brain_tumor_mri.server.strategies import Random, UncertaintyStrategy
from brain_tumor_mri.training.cache_file import CacheEntry
from brain_tumor_mri.training.cases import CaseSpec
from brain_tumor_mri.training.datasets import make_loader
from brain_tumor_mri.training.metrics import dice
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.run_model import train_stores
from brain_tumor_mri.training.sampler import PlanSampler, foreground_coords
from brain_tumor_mri.training.seg_model import SegModel, dice_bce_loss
from brain_tumor_mri.training.step import StepContext, train_step
from brain_tumor_mri.training.store import CaseStore

logger = logging.getLogger(__name__)

UNCERTAINTY_METHODS = ("epistemic", "tta")


@dataclass(frozen=True)
class SegCase:
    """One generated, preprocessed case held in memory: image (4, x, y, z), label (x, y, z) uint8."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor


def memory_store(cases: list[SegCase]) -> CaseStore:
    """The engine's view of in-memory cases (the entries the cache would hold for them)."""
    specs = [CaseSpec(c.case_id, (), "memory") for c in cases]
    entries = [
        CacheEntry({"image": c.image.numpy(), "label": c.label.numpy(), "fg": foreground_coords(c.label.numpy(), i)})
        for i, c in enumerate(cases)
    ]
    return CaseStore.in_memory(specs, entries)


class MemoryDatastore:
    """The datastore calls strategies make, over ids held in memory (all 3D cases)."""

    def __init__(self, ids: list[str], labelled: set[str], studies: Path) -> None:
        """``ids`` all count as 3D cases; ``labelled`` grows as the simulated annotator works."""
        self.studies = studies  # never created: no case.json, so the ".nii.gz" name marks 3D
        self.ids = sorted(ids)
        self.labelled = set(labelled)
        self.infos: dict[str, dict[str, Any]] = {i: {"name": f"{i}.nii.gz"} for i in self.ids}

    def get_unlabeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        """Ids not labelled yet, sorted."""
        return [i for i in self.ids if i not in self.labelled]

    def get_labeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        """Ids labelled so far, sorted."""
        return [i for i in self.ids if i in self.labelled]

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        """A copy of the case's info (name and stored scores)."""
        return {**self.infos[image_id], "scores": dict(self.infos[image_id].get("scores", {}))}

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """Merge ``info`` into the case's info at the top level, as MONAI Label does."""
        self.infos[image_id].update(info)


@dataclass(frozen=True)
class SimSettings:
    """Scale of one simulation (small defaults run in minutes on a 2-core CPU)."""

    initial: int = 4
    batch: int = 4
    rounds: int = 4
    samples: int = 4  # stochastic passes per uncertainty score
    train: TrainOptions = field(default_factory=lambda: TrainOptions("segmentation", Path("."), Path(".")))
    initial_epochs: int = 20


@dataclass
class RoundResult:
    """One point of a learning curve."""

    seed: int
    strategy: str
    round: int
    n_labelled: int
    dice: dict[str, float]
    picked: list[str]
    seconds: float


def make_segmenter(weights: Path, spacing: float) -> Segmenter:
    """A segmenter serving ``weights`` exactly as the server would (CPU, auto bf16)."""
    device = torch.device("cpu")
    reduced = use_reduced_precision(device, "auto")
    return Segmenter(ModelStore("segmentation", weights, weights, device, channels_last=reduced), spacing, reduced)


def evaluate(seg: Segmenter, cases: list[SegCase]) -> dict[str, float]:
    """Mean Dice per region over ``cases`` on the working grid, and the mean of the three."""
    per_region: list[list[float]] = [[], [], []]
    for case in cases:
        pred = label_to_regions(regions_to_label(seg.forward(case.image).numpy()))
        gt = label_to_regions(case.label.numpy())
        for r in range(3):
            per_region[r].append(dice(pred[r], gt[r]))
    out = {name: float(np.mean(v)) for name, v in zip(("wt", "tc", "et"), per_region)}
    out["mean"] = float(np.mean([out["wt"], out["tc"], out["et"]]))
    return out


def train_initial(opts: TrainOptions, cases: list[SegCase], weights: Path, run_dir: Path) -> None:
    """Train the starting model from scratch with the app's engine (it always publishes)."""
    store = memory_store(cases)
    data = (store, store, {"n_train": len(cases)})
    result = train_stores(SegModel(opts, None), opts, data, weights, run_dir)
    if not result.published:
        raise RuntimeError(f"the initial model was not published: {result.decision}")


def fine_tune(opts: TrainOptions, cases: list[SegCase], weights: Path) -> float:
    """Fine-tune ``weights`` in place on the labelled ``cases`` for ``opts.epochs``; mean loss.

    Uses the engine's patch dataset, sampler and step but keeps the last epoch instead of
    gating on validation: the only validation data an annotation loop has are the labelled
    cases themselves, and a gate on them rejects more updates after hard (uncertain)
    picks, which would freeze exactly the curves being compared.
    """
    loaded = load_model(weights, "segmentation")
    device = torch.device("cpu")
    reduced = use_reduced_precision(device, opts.bf16) and opts.amp
    net = to_memory_format(loaded.network, reduced)
    ctx = StepContext(device, reduced, reduced, torch.optim.AdamW(net.parameters(), lr=opts.lr or 2e-4,
                                                                  weight_decay=1e-5))  # fmt: skip
    model = SegModel(opts, None)
    store = memory_store(cases)
    sampler = PlanSampler(model.plan([s for s in store.specs], 0), model.samples_per_epoch(len(cases)))
    loader = make_loader(model.dataset(store), sampler, opts.batch_size or 2, 0, device)
    losses = []
    net.train()
    for epoch in range(1, opts.epochs + 1):
        sampler.set_epoch(epoch)
        for x, y in loader:
            losses.append(train_step(net, ctx.to_device(x), model.target(y, ctx), dice_bce_loss, ctx))
    net.eval()
    save_model(net.to(memory_format=torch.contiguous_format), weights, loaded.meta)  # type: ignore[call-overload]
    return float(np.mean(losses)) if losses else float("nan")


def pick(
    strategy: str, ds: MemoryDatastore, pool: dict[str, SegCase], seg: Segmenter, sim: SimSettings, seed: int
) -> list[str]:
    """Let ``strategy`` choose ``sim.batch`` cases, scoring the pool first if it needs scores."""
    book = Reservations()
    if strategy == "random":
        chooser: Any = Random(ds.studies, book, seed)
    elif strategy in UNCERTAINTY_METHODS:
        version = served_version(seg.store)
        for cid in ds.get_unlabeled_images():
            unc = case_uncertainty(seg, _prepared(pool[cid]), strategy, sim.samples, seed=seed)
            merge_score(ds, cid, strategy, {"score": unc.score, "model_version": version, "ts": int(time.time())})
        chooser = UncertaintyStrategy(ds.studies, book, strategy, lambda: version)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected random or one of {UNCERTAINTY_METHODS}")
    picked = []
    for _ in range(sim.batch):
        answer = chooser({}, ds)
        if not answer:
            break
        picked.append(answer["id"])
    return picked


def _prepared(case: SegCase) -> Any:
    """The minimal ``Prepared``-like object ``case_uncertainty`` reads (its image)."""
    from types import SimpleNamespace

    return SimpleNamespace(image=case.image)


def run_strategy(
    strategy: str,
    seed: int,
    pool: dict[str, SegCase],
    test: list[SegCase],
    initial: list[str],
    start_weights: Path,
    work: Path,
    sim: SimSettings,
) -> list[RoundResult]:
    """One learning curve: start from ``initial`` labelled cases and ``start_weights``."""
    weights = work / f"seed{seed}-{strategy}" / "segmentation.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".json"):
        shutil.copy(start_weights.with_suffix(suffix), weights.with_suffix(suffix))
    ds = MemoryDatastore(sorted(pool), set(initial), work / "no-studies")
    seg = make_segmenter(weights, sim.train.spacing)
    results = [RoundResult(seed, strategy, 0, len(initial), evaluate(seg, test), sorted(initial), 0.0)]
    train = sim.train.replace(seed=seed)
    for rnd in range(1, sim.rounds + 1):
        t0 = time.monotonic()
        picked = pick(strategy, ds, pool, seg, sim, seed * 1000 + rnd)
        if not picked:
            break
        ds.labelled.update(picked)
        cases = [pool[i] for i in sorted(ds.labelled)]
        loss = fine_tune(train, cases, weights)
        scores = evaluate(seg, test)
        results.append(
            RoundResult(seed, strategy, rnd, len(ds.labelled), scores, picked, round(time.monotonic() - t0, 1))
        )
        logger.info(
            "seed %d %s round %d: %d labelled, loss %.3f, Dice %.4f (picked %s)",
            seed,
            strategy,
            rnd,
            len(ds.labelled),
            loss,
            scores["mean"],
            ",".join(picked),
        )
    return results


def initial_model(seed: int, pool: dict[str, SegCase], work: Path, sim: SimSettings) -> tuple[list[str], Path]:
    """The seed's initial labelled set and a model trained on it from scratch."""
    rng = np.random.default_rng(seed)
    initial = sorted(rng.choice(sorted(pool), size=sim.initial, replace=False).tolist())
    weights = work / f"seed{seed}-initial" / "segmentation.pt"
    settings = sim.train.replace(seed=seed, epochs=sim.initial_epochs, patience=sim.initial_epochs)
    train_initial(settings, [pool[i] for i in initial], weights, weights.parent / "run")
    return initial, weights


def summarize_curves(results: list[RoundResult]) -> dict[str, dict[int, tuple[float, float, int]]]:
    """strategy -> n_labelled -> (mean Dice, sd over seeds, number of seeds)."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in results:
        acc.setdefault(r.strategy, {}).setdefault(r.n_labelled, []).append(r.dice["mean"])

    def stats(v: list[float]) -> tuple[float, float, int]:
        return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)

    return {s: {n: stats(v) for n, v in sorted(c.items())} for s, c in acc.items()}


def labels_saved(curves: dict[str, dict[int, tuple[float, float, int]]], baseline: str = "random") -> dict[str, Any]:
    """Fewest labelled cases with which each strategy's mean curve reaches the baseline's final Dice."""
    base = curves[baseline]
    target = base[max(base)][0]

    def first_reach(curve: dict[int, tuple[float, float, int]]) -> int | None:
        return next((n for n, (m, _, _) in sorted(curve.items()) if m >= target), None)

    n_base = first_reach(base)
    out: dict[str, Any] = {"baseline": baseline, "target_dice": target, "baseline_labels": n_base, "strategies": {}}
    for name, curve in curves.items():
        if name == baseline:
            continue
        n = first_reach(curve)
        saved = None if n is None or n_base is None else n_base - n
        out["strategies"][name] = {
            "labels_to_reach": n,
            "labels_saved": saved,
            "fraction_saved": None if saved is None or not n_base else round(saved / n_base, 3),
            "final_dice": curve[max(curve)][0],
        }
    return out
