"""``brain-tumor-dev simulate-active-learning``: learning curves of random vs uncertainty picking.

Generates a pool and a held-out set of synthetic cases, then for each seed trains an
initial model on a few labelled cases and runs the annotation loop of
``activelearning.simulation`` once per strategy. Writes ``results.csv`` (one row per
seed, strategy and round), ``summary.json`` (mean +- sd curves and the labels-saved
figure) and ``learning_curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor_mri.labels import SEQUENCES

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "epistemic", "tta")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Scale, strategies and output of the simulation."""
    p.add_argument("--out", type=Path, default=Path("docs/al"), help="results folder (default: docs/al)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for weights (default: a temporary one)")
    p.add_argument("--pool", type=int, default=40, help="unlabelled pool size (default: 40)")
    p.add_argument("--test", type=int, default=12, help="held-out cases for Dice (default: 12)")
    p.add_argument("--initial", type=int, default=4, help="labelled cases at the start (default: 4)")
    p.add_argument("--batch", type=int, default=4, help="cases labelled per round (default: 4)")
    p.add_argument("--rounds", type=int, default=4, help="annotation rounds (default: 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--spacing", type=float, default=3.0, help="working spacing in mm (default: 3)")
    p.add_argument("--channels", default="4,8,16,32,64", help="U-Net channels (default: 4,8,16,32,64)")
    p.add_argument("--samples", type=int, default=4, help="stochastic passes per uncertainty score (default: 4)")
    p.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs per round (default: 8)")
    p.add_argument("--initial-epochs", type=int, default=20, help="epochs of the initial model (default: 20)")
    p.add_argument("--samples-per-epoch", type=int, default=16, help="patches per epoch (default: 16)")
    p.add_argument("--patch", type=int, default=48, help="cubic training patch, multiple of 16 (default: 48)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default: 2e-3)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads; 1 is fastest on a CPU shared with other jobs (default: torch's choice)",
    )
    p.add_argument("--data-seed", type=int, default=1234, help="seed of the generated cases (default: 1234)")


def generate(index: int, seed: int, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case as (4, x, y, z) sequences in ``SEQUENCES`` order, label, affine."""
    from brain_tumor_mri.data.synthetic import generate_case

    case = generate_case(index, seed, spacing)
    get = case.get if isinstance(case, dict) else lambda k: getattr(case, k)
    seqs = get("sequences")
    stack = np.stack([np.asarray(seqs[k], np.float32) for k in SEQUENCES]) if isinstance(seqs, dict) else seqs
    return np.asarray(stack, np.float32), np.asarray(get("seg")), np.asarray(get("affine"), np.float64)


def load_cases(n: int, first_index: int, args: argparse.Namespace) -> dict[str, Any]:
    """Generate and preprocess ``n`` cases (id -> SegCase) once for every strategy and seed."""
    from brain_tumor_mri.transforms.preprocess import prepare_case

    from .al_simulation import SegCase

    cases = {}
    for i in range(first_index, first_index + n):
        stack, seg, affine = generate(i, args.data_seed, args.spacing)
        prepared = prepare_case(stack, affine, args.spacing, seg)
        cid = f"sim-{i:04d}"
        assert prepared.label is not None  # a label was passed in
        cases[cid] = SegCase(cid, prepared.image.contiguous(), prepared.label.contiguous())
    return cases


def sim_settings(args: argparse.Namespace) -> Any:
    """Simulation and training settings from the command line."""
    from brain_tumor_mri.training.options import TrainOptions

    from .al_simulation import SimSettings

    channels = [int(c) for c in args.channels.split(",")]
    train = TrainOptions(
        "segmentation", Path("."), Path("."), epochs=args.epochs, lr=args.lr, patience=args.epochs, batch_size=2,
        samples_per_epoch=args.samples_per_epoch, device="cpu", spacing=args.spacing, patch=args.patch,
        network={"channels": channels, "strides": [2] * (len(channels) - 1), "num_res_units": 1},
        command="simulate-active-learning", workers=0,
    )  # fmt: skip
    return SimSettings(args.initial, args.batch, args.rounds, args.samples, train, args.initial_epochs)


def write_csv(path: Path, results: list[Any]) -> None:
    """One row per seed, strategy and round."""
    with open(path, "w", newline="", encoding="utf-8") as fp:
        w = csv.writer(fp)
        w.writerow(
            [
                "seed",
                "strategy",
                "round",
                "n_labelled",
                "dice_wt",
                "dice_tc",
                "dice_et",
                "dice_mean",
                "seconds",
                "picked",
            ]
        )
        for r in results:
            d = r.dice
            w.writerow(
                [
                    r.seed,
                    r.strategy,
                    r.round,
                    r.n_labelled,
                    *(f"{d[k]:.4f}" for k in ("wt", "tc", "et", "mean")),
                    r.seconds,
                    ";".join(r.picked),
                ]
            )


def plot(path: Path, curves: dict[str, dict[int, tuple[float, float, int]]], saved: dict[str, Any]) -> None:
    """Mean +- sd Dice against labelled cases, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        n = np.array(sorted(curve))
        mean = np.array([curve[k][0] for k in n])
        sd = np.array([curve[k][1] for k in n])
        ax.plot(n, mean, marker="o", label=name)
        ax.fill_between(n, mean - sd, mean + sd, alpha=0.2)
    ax.axhline(saved["target_dice"], color="grey", linestyle="--", linewidth=0.8, label="random, final")
    seeds = max(c[2] for curve in curves.values() for c in curve.values())
    ax.set(
        xlabel="labelled cases",
        ylabel="held-out Dice (mean of WT, TC, ET)",
        title=f"Simulated active learning (mean ± sd over {seeds} seeds)",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run every seed and strategy, then write CSV, JSON and PNG."""
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="simulate-al-") as tmp:
            return simulate(args, Path(tmp))
    return simulate(args, Path(args.work))


def simulate(args: argparse.Namespace, work: Path) -> int:
    """The simulation proper, with weights and training runs under ``work``."""
    import torch

    from . import al_simulation as simmod

    t0 = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = sim_settings(args)
    torch.manual_seed(args.data_seed)
    pool = load_cases(args.pool, 0, args)
    test = list(load_cases(args.test, args.pool, args).values())
    logger.info("generated %d pool and %d test cases in %.0f s", len(pool), len(test), time.monotonic() - t0)
    results = []
    for seed in args.seeds:
        initial, start = simmod.initial_model(seed, pool, work, sim)
        for strategy in args.strategies:
            results += simmod.run_strategy(strategy, seed, pool, test, initial, start, work, sim)
        write_csv(out / "results.csv", results)  # partial results survive an interrupted run
    curves = simmod.summarize_curves(results)
    saved = simmod.labels_saved(curves) if "random" in curves else {}
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "train": sim.train.to_record(),
        "curves": {
            s: {str(n): {"mean": m, "sd": sd, "seeds": k} for n, (m, sd, k) in c.items()} for s, c in curves.items()
        },
        "labels_saved": saved,
        "minutes": round((time.monotonic() - t0) / 60, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if saved:
        plot(out / "learning_curves.png", curves, saved)
    logger.info("labels saved: %s", json.dumps(saved.get("strategies", {})))
    logger.info("done in %.1f min; results in %s", summary["minutes"], out)
    return 0
