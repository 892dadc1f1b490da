"""Simulated annotation loop: does an uncertainty strategy reach a Dice with fewer labels?

Every round a strategy picks ``batch`` cases from the unlabelled pool, their ground truth
is "revealed" (the simulated annotator labels them), the model is fine-tuned briefly with
the app's training loop (the initial model with its full training run), and Dice (mean of
WT/TC/ET) is measured on a fixed held-out set, overall and per archive domain. The picking
runs the app's own code: the ``Random``, ``UncertaintyStrategy`` and ``DiverseStrategy``
strategies over an in-memory datastore, with scores from ``uncertainty.case_uncertainty``
and features from ``diversity.pooled_features`` stored by ``scoring.merge_score`` /
``merge_features`` exactly as the scoring methods store them.
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

from brain_tumor_mri.activelearning.diversity import pooled_features, round_features
from brain_tumor_mri.activelearning.pool import Reservations
from brain_tumor_mri.activelearning.uncertainty import case_uncertainty
from brain_tumor_mri.inference.segmenter import Segmenter
from brain_tumor_mri.labels import label_to_regions, regions_to_label
from brain_tumor_mri.networks.checkpoint import load_model, save_model
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.runtime import to_memory_format, use_reduced_precision
from brain_tumor_mri.server.scoring import merge_features, merge_score, served_version
from brain_tumor_mri.server.strategies import DiverseStrategy, Random, UncertaintyStrategy
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
STRATEGIES = ("random", *UNCERTAINTY_METHODS, "diverse")


@dataclass(frozen=True)
class SegCase:
    """One generated, preprocessed case held in memory: image (4, x, y, z), label (x, y, z) uint8."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    domain: str = ""  # archive domain (al_pool), for per-domain Dice


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
    initial_lr: float = 2e-3  # the initial model trains from scratch; rounds fine-tune at ``train.lr``
    clusters: int = 8  # feature clusters of the diverse strategy


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
    domains: dict[str, float] = field(default_factory=dict)  # mean Dice per held-out domain
    picked_domains: list[str] = field(default_factory=list)


def sim_device(opts: TrainOptions) -> torch.device:
    """``opts.device`` with ``auto`` resolved (CUDA when there is one)."""
    if opts.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(opts.device)


def make_segmenter(weights: Path, spacing: float, device: torch.device | None = None) -> Segmenter:
    """A segmenter serving ``weights`` exactly as the server would (auto bf16 on the CPU)."""
    device = device or torch.device("cpu")
    reduced = use_reduced_precision(device, "auto")
    return Segmenter(ModelStore("segmentation", weights, weights, device, channels_last=reduced), spacing, reduced)


def evaluate(seg: Segmenter, cases: list[SegCase]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean Dice per region over ``cases`` and the mean of the three; mean Dice per domain."""
    per_region: list[list[float]] = [[], [], []]
    per_domain: dict[str, list[float]] = {}
    for case in cases:
        pred = label_to_regions(regions_to_label(seg.forward(case.image).numpy()))
        gt = label_to_regions(case.label.numpy())
        values = [dice(pred[r], gt[r]) for r in range(3)]
        for r in range(3):
            per_region[r].append(values[r])
        per_domain.setdefault(case.domain or "all", []).append(float(np.mean(values)))
    out = {name: float(np.mean(v)) for name, v in zip(("wt", "tc", "et"), per_region)}
    out["mean"] = float(np.mean([out["wt"], out["tc"], out["et"]]))
    return out, {d: float(np.mean(v)) for d, v in sorted(per_domain.items())}


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
    device = sim_device(opts)
    reduced = use_reduced_precision(device, opts.bf16) and opts.amp
    net = to_memory_format(loaded.network.to(device), reduced)
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
    net = net.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    save_model(net, weights, loaded.meta)
    return float(np.mean(losses)) if losses else float("nan")


def pick(
    strategy: str, ds: MemoryDatastore, pool: dict[str, SegCase], seg: Segmenter, sim: SimSettings, seed: int
) -> list[str]:
    """Let ``strategy`` choose ``sim.batch`` cases, scoring the pool first if it needs scores."""
    book = Reservations()
    version = served_version(seg.store)
    if strategy == "random":
        chooser: Any = Random(ds.studies, book, seed)
    elif strategy in UNCERTAINTY_METHODS:
        store_scores(ds, pool, seg, strategy, sim.samples, seed, features=False)
        chooser = UncertaintyStrategy(ds.studies, book, strategy, lambda: version)
    elif strategy == "diverse":
        store_scores(ds, pool, seg, "epistemic", sim.samples, seed, features=True)
        chooser = DiverseStrategy(ds.studies, book, "epistemic", lambda: version, sim.clusters, seed)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    picked = []
    for _ in range(sim.batch):
        answer = chooser({}, ds)
        if not answer:
            break
        picked.append(answer["id"])
    return picked


def store_scores(
    ds: MemoryDatastore, pool: dict[str, SegCase], seg: Segmenter, method: str, samples: int, seed: int, features: bool
) -> None:
    """Score the unlabelled cases (and, with ``features``, describe every case) as scoring does."""
    version = served_version(seg.store)
    model = seg.store.get()
    for cid in ds.get_unlabeled_images():
        unc = case_uncertainty(seg, _prepared(pool[cid]), method, samples, seed=seed, model=model)
        merge_score(ds, cid, method, {"score": unc.score, "model_version": version, "ts": int(time.time())})
    if features:
        for cid in ds.ids:
            vector = round_features(pooled_features(seg, pool[cid].image, model))
            merge_features(ds, cid, {"vector": vector, "model_version": version, "ts": int(time.time())})


def _prepared(case: SegCase) -> Any:
    """The minimal ``Prepared``-like object ``case_uncertainty`` reads (its image)."""
    from types import SimpleNamespace

    return SimpleNamespace(image=case.image)


def _start_from(start_weights: Path, weights: Path) -> None:
    """Copy the seed's initial weights and sidecar to a curve's own ``weights``."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".json"):
        shutil.copy(start_weights.with_suffix(suffix), weights.with_suffix(suffix))


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
    _start_from(start_weights, weights)
    ds = MemoryDatastore(sorted(pool), set(initial), work / "no-studies")
    seg = make_segmenter(weights, sim.train.spacing, sim_device(sim.train))
    dice0, domains0 = evaluate(seg, test)
    domains_of = [pool[i].domain for i in sorted(initial)]
    results = [RoundResult(seed, strategy, 0, len(initial), dice0, sorted(initial), 0.0, domains0, domains_of)]
    train = sim.train.replace(seed=seed)
    for rnd in range(1, sim.rounds + 1):
        t0 = time.monotonic()
        picked = pick(strategy, ds, pool, seg, sim, seed * 1000 + rnd)
        if not picked:
            break
        ds.labelled.update(picked)
        loss = fine_tune(train, [pool[i] for i in sorted(ds.labelled)], weights)
        scores, domains = evaluate(seg, test)
        seconds = round(time.monotonic() - t0, 1)
        picked_domains = [pool[i].domain for i in picked]
        results.append(
            RoundResult(seed, strategy, rnd, len(ds.labelled), scores, picked, seconds, domains, picked_domains)
        )
        logger.info(
            "seed %d %s round %d: %d labelled, loss %.3f, Dice %.4f (picked %s)",
            seed, strategy, rnd, len(ds.labelled), loss, scores["mean"], ",".join(picked),
        )  # fmt: skip
    return results


def full_pool_dice(
    seed: int, pool: dict[str, SegCase], test: list[SegCase], start_weights: Path, work: Path, sim: SimSettings
) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out Dice when the whole pool is labelled: the seed's initial model fine-tuned on
    every pool case with the same recipe, as many times as a curve has rounds."""
    weights = work / f"seed{seed}-full" / "segmentation.pt"
    _start_from(start_weights, weights)
    train = sim.train.replace(seed=seed)
    cases = [pool[i] for i in sorted(pool)]
    for _ in range(sim.rounds):
        fine_tune(train, cases, weights)
    result = evaluate(make_segmenter(weights, sim.train.spacing, sim_device(sim.train)), test)
    logger.info("seed %d full pool (%d cases): Dice %.4f", seed, len(cases), result[0]["mean"])
    return result


def initial_model(seed: int, pool: dict[str, SegCase], work: Path, sim: SimSettings) -> tuple[list[str], Path]:
    """The seed's initial labelled set (random, as a site starts) and a model trained on it from scratch."""
    rng = np.random.default_rng(seed)
    initial = sorted(rng.choice(sorted(pool), size=sim.initial, replace=False).tolist())
    weights = work / f"seed{seed}-initial" / "segmentation.pt"
    settings = sim.train.replace(seed=seed, epochs=sim.initial_epochs, patience=sim.initial_epochs, lr=sim.initial_lr)
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


def per_seed_curves(results: list[RoundResult]) -> dict[str, dict[int, dict[int, float]]]:
    """strategy -> seed -> n_labelled -> mean Dice (the input of ``al_stats.labels_saved``)."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    for r in results:
        out.setdefault(r.strategy, {}).setdefault(r.seed, {})[r.n_labelled] = r.dice["mean"]
    return out
