"""``brain-tumor-dev adapt-curve``: Dice on a new source's other cases against the number of corrections.

Takes a labelled datastore from a source the served model never saw (e.g. the generator's
colin27 anatomy, held out of the shipped model's training), sets aside ``--eval`` of its
cases as "the site's other cases", and for each count in ``--counts`` and each seed draws
that many of the remaining cases as the site's corrections. For each draw it fine-tunes
the served model with the site-adaptation recipe (``training.adapt``: every case, fixed
budget, replay of ``--replay`` at ``--replay-fraction``) and, with ``--scratch``, trains a
model from scratch on the same cases with the same budget. Each model is judged after its
last epoch (no selection) on the evaluation cases and on ``--original`` original-domain
cases (never replayed), against the served model on the same cases. Writes
``summary.json``, ``table.md`` and ``adapt_curve.png`` into ``--out`` and the wall time of
every retrain. Besides the means over all evaluation cases (BraTS rule: a region empty in
the reference scores 1 when the prediction is empty too, else 0), each region is reported
on the cases that have it and, for the cases that do not, as the share segmented empty
(``site_present`` / ``site_before_present``, ``split_means``): with several tumour-free cases among 16, one small false
component flips a case from 1 to 0 and moves the all-case mean by 0.06, which would hide
what the corrections did to the tumours. The publish decision is not part of the curve (``--cv`` is not offered):
the curve measures what the recipe's model does, whatever the rule would decide. With
``--served`` the site's cases are also scored as the server answers them (the served
pipeline, with the post-processing a site adaptation keeps from the model it fine-tuned;
``site_served`` / ``site_before_served``), since validation scores the network's own output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor_mri import layout
from brain_tumor_mri.imageio import load_volume
from brain_tumor_mri.inference.segmenter import Segmenter, store_expectations
from brain_tumor_mri.labels import REGION_CHANNELS, convert_labels, label_to_regions, region_mask
from brain_tumor_mri.networks.checkpoint import sidecar_path
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.runtime import pick_device, use_reduced_precision
from brain_tumor_mri.training.adapt import RECIPE, recipe_options
from brain_tumor_mri.training.cases import REPLAY, CaseSpec, segmentation_cases
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.postprocess_fit import carry_postprocess, case_dice
from brain_tumor_mri.training.publish import Decision, DecisionInput
from brain_tumor_mri.training.run_model import run_model
from brain_tumor_mri.training.seg_data import read_labelled_case
from brain_tumor_mri.training.seg_model import SegModel

logger = logging.getLogger(__name__)

REGIONS = ("wt", "tc", "et", "mean")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--studies", type=Path, required=True, help="labelled datastore of the new source")
    p.add_argument("--counts", default="1,2,4,8,16", help="numbers of corrected cases (default 1,2,4,8,16)")
    p.add_argument("--seeds", type=int, default=3, help="draws per count (default 3)")
    p.add_argument("--eval", type=int, default=16, help="evaluation cases of the new source (default 16)")
    p.add_argument("--replay", type=Path, help="original-domain datastore replayed while adapting")
    p.add_argument("--replay-fraction", type=float, default=0.25, help="share of replayed patches (default 0.25)")
    p.add_argument("--replay-cases", type=int, default=16, help="replayed original-domain cases (default 16)")
    p.add_argument("--original", type=int, default=4, help="original-domain cases to check forgetting on (default 4)")
    p.add_argument("--init", type=Path, default=Path("model_weights/segmentation.pt"), help="the served model")
    p.add_argument("--scratch", action="store_true", help="also train from scratch on the same cases")
    p.add_argument("--served", action="store_true",
                   help="also score the site's cases as the server answers them (with post-processing)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=0.0, help="cap on each retrain (0: the recipe's budget)")
    p.add_argument("--lr", type=float, help="peak learning rate of the adaptation (default: the recipe's)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply the recipe's patch budget (e.g. 0.25 for a quick look, 4 on a GPU)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--out", type=Path, default=Path("docs/adapt"), help="summary.json, table.md, adapt_curve.png")
    p.add_argument("--workdir", type=Path, help="keep per-run datastores and the case cache here")


def _label(studies: Path, cid: str) -> Path:
    """The case's final label, else its reference label (a generator datastore)."""
    for kind in ("final", "reference"):
        path = studies / "labels" / kind / f"{cid}.nii.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{cid}: no label in {studies}/labels/(final|reference)")


def _datastore(src: Path, ids: list[str], dst: Path) -> Path:
    """A datastore of links to ``ids`` of ``src``, their labels as final labels."""
    (dst / "labels" / "final").mkdir(parents=True, exist_ok=True)
    (dst / "cases").mkdir(exist_ok=True)
    for cid in ids:  # a rerun with the same --workdir finds its links already there
        if (dst / "labels" / "final" / f"{cid}.nii.gz").is_symlink():
            continue
        (dst / f"{cid}.nii.gz").symlink_to((src / f"{cid}.nii.gz").resolve())
        if (src / "cases" / cid).is_dir():
            (dst / "cases" / cid).symlink_to((src / "cases" / cid).resolve(), target_is_directory=True)
        (dst / "labels" / "final" / f"{cid}.nii.gz").symlink_to(_label(src, cid).resolve())
    return dst


def _keep(inp: DecisionInput) -> Decision:
    return Decision(True, "adapt-curve: kept for measurement", {"rule": "measure"})


def served_scores(weights: Path, evals: list[CaseSpec], device: str) -> dict[str, dict[str, float]]:
    """Per-case Dice (wt, tc, et, mean) of ``weights`` run as the server runs them, post-processing included."""
    dev = pick_device(device)
    store = ModelStore("segmentation", weights, weights, dev, expect=store_expectations())
    segmenter = Segmenter(store, 2.0, use_reduced_precision(dev, "auto"))
    out: dict[str, dict[str, float]] = {}
    for spec in evals:
        stack, affine, _, truth = read_labelled_case(spec)
        scores = case_dice(segmenter.segment(stack, affine).label, label_to_regions(truth))
        out[spec.case_id] = {**dict(zip(("wt", "tc", "et"), (float(v) for v in scores))), "mean": float(scores.mean())}
    return out


def _means(per_case: dict[str, dict[str, float]], ids: set[str]) -> dict[str, float]:
    rows = [v for k, v in per_case.items() if k in ids]
    return {r: round(float(np.mean([x[r] for x in rows])), 4) for r in REGIONS} if rows else {}


def region_presence(studies: Path, ids: list[str]) -> dict[str, dict[str, bool]]:
    """Case id -> whether WT, TC and ET are present in its reference label."""
    out = {}
    for cid in ids:
        label = convert_labels(load_volume(_label(studies, cid))[0], "internal", source=f"case {cid} label")
        out[cid] = {key: bool(region_mask(label, name).any()) for key, name in zip(("wt", "tc", "et"), REGION_CHANNELS)}
    return out


def split_means(per_case: dict[str, dict[str, float]], presence: dict[str, dict[str, bool]]) -> dict[str, Any]:
    """Per region: mean Dice over the cases whose reference has it, and the share of the others segmented empty.

    ``{"present": {region: mean or None}, "empty": {region: share or None}, "n_present": {...}, "n_empty": {...}}``;
    a case's Dice for an empty reference is 1 exactly when its prediction is empty (BraTS rule).
    """
    out: dict[str, Any] = {"present": {}, "empty": {}, "n_present": {}, "n_empty": {}}
    for region in ("wt", "tc", "et"):
        for scope, want in (("present", True), ("empty", False)):
            vals = [v[region] for k, v in per_case.items() if k in presence and presence[k][region] is want]
            out[scope][region] = round(float(np.mean(vals)), 4) if vals else None
            out[f"n_{scope}"][region] = len(vals)
    return out


def _one(args: argparse.Namespace, train: list[CaseSpec], evals: list[CaseSpec], original: list[CaseSpec],
         replay: list[CaseSpec], scratch: bool, work: Path,
         presence: dict[str, dict[str, bool]]) -> dict[str, Any]:  # fmt: skip
    """One retrain (recipe fine-tuning, or from scratch) judged on the evaluation + original cases."""
    init = None if scratch else args.init.resolve()
    base = TrainOptions("segmentation", work, args.init.parent.resolve(), init="none" if scratch else str(init),
                        run_dir=work / ("scratch" if scratch else "adapt"), cache_dir=args.workdir_cache,
                        device=args.device, workers=args.workers, seed=args.seed_now,
                        replay_studies=args.replay, replay_fraction=args.replay_fraction if replay else 0.0,
                        adapt=True)  # fmt: skip
    r = RECIPE
    recipe = dataclasses.replace(r, patches_base=max(1, round(r.patches_base * args.budget_scale)),
                                 patches_per_case=round(r.patches_per_case * args.budget_scale),
                                 patches_max=max(1, round(r.patches_max * args.budget_scale)))  # fmt: skip
    opts = recipe_options(base, len(train), args.init.resolve(), 1, recipe)
    if scratch:  # the served model's architecture, its from-scratch learning rate, the same budget
        network = json.loads(sidecar_path(args.init).read_text(encoding="utf-8")).get("network", {})
        opts = opts.replace(lr=1e-3, schedule="cosine", network=network, max_minutes=args.max_minutes or 0.0)
    else:
        opts = opts.replace(max_minutes=args.max_minutes or 0.0, lr=args.lr or opts.lr)
    name = "scratch" if scratch else "adapt"
    res = run_model(SegModel(opts, init), opts, (train, evals + original, [] if scratch else replay),
                    work / f"{name}.pt", opts.run_dir or work, None, None, _keep)  # fmt: skip
    ev, og = {s.case_id for s in evals}, {s.case_id for s in original}
    trained, initial = res.validation.get("trained") or {}, res.validation.get("initial") or {}
    row = {"seconds": res.seconds, "epochs": res.epochs_run, "patches": opts.epochs * opts.samples_per_epoch,
           "status": res.status, "site": _means(trained, ev), "original": _means(trained, og),
           "site_before": _means(initial, ev), "original_before": _means(initial, og),
           "site_present": split_means(trained, presence),
           "site_before_present": split_means(initial, presence)}  # fmt: skip
    if args.served and not scratch and res.published:
        carry_postprocess(work / f"{name}.pt", init)
        row["site_served"] = split_means(served_scores(work / f"{name}.pt", evals, args.device), presence)
        row["site_before_served"] = args.served_before
    return row


def run(args: argparse.Namespace) -> int:
    """Run every (count, seed) retrain and write the summary, table and plot."""
    studies = args.studies.resolve()
    ids = layout.list_cases(studies, kind="3d")
    rng = random.Random(12345)
    shuffled = sorted(ids)
    rng.shuffle(shuffled)
    eval_ids, pool = sorted(shuffled[: args.eval]), shuffled[args.eval :]
    counts = [int(c) for c in args.counts.split(",")]
    if max(counts) > len(pool):
        raise ValueError(f"--counts up to {max(counts)} but only {len(pool)} cases are left after --eval {args.eval}")
    work_root = Path(args.workdir or tempfile.mkdtemp(prefix="adapt-curve-")).resolve()
    args.workdir_cache = work_root / "cache"
    evals = segmentation_cases(_datastore(studies, eval_ids, work_root / "eval"))
    presence = region_presence(studies, eval_ids)
    replay_all = segmentation_cases(args.replay, REPLAY) if args.replay else []
    original, replay = replay_all[: args.original], replay_all[args.original : args.original + args.replay_cases]
    args.served_before = None
    if args.served:  # the served model as the server answers, once: the same for every draw
        args.served_before = split_means(served_scores(args.init.resolve(), evals, args.device), presence)
    rows = []
    for count in counts:
        for seed in range(args.seeds):
            args.seed_now = seed
            picked = sorted(random.Random(1000 * count + seed).sample(pool, count))
            work = work_root / f"n{count}-s{seed}"
            train = segmentation_cases(_datastore(studies, picked, work / "studies"))
            row: dict[str, Any] = {"count": count, "seed": seed, "cases": picked}
            row["adapted"] = _one(args, train, evals, original, replay, False, work / "studies", presence)
            if args.scratch:
                row["scratch"] = _one(args, train, evals, original, [], True, work / "studies", presence)
            logger.info("n=%d seed=%d: %s", count, seed, json.dumps(row, default=str))
            rows.append(row)
            _write(args, rows, {"command": "brain-tumor-dev " + shlex.join(sys.argv[1:]), "studies": str(args.studies),
               "eval_cases": eval_ids, "eval_regions_present": presence,
               "original_cases": [s.case_id for s in original],
               "replay": str(args.replay) if args.replay else None, "replay_cases": [s.case_id for s in replay],
               "replay_fraction": args.replay_fraction, "runs": rows,
               "finished": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    logger.info("adaptation curve:\n%s\n%s", to_markdown(rows), split_markdown(rows))
    return 0


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write the summary, table and plot of the rows so far (after every retrain: a long run can be cut short)."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({**summary, "runs": rows}, indent=2), encoding="utf-8")
    split = split_markdown(rows) if all("site_present" in r["adapted"] for r in rows) else ""
    text = to_markdown(rows) + (f"\nBy whether the reference has the region:\n\n{split}" if split else "")
    if all("site_served" in r["adapted"] for r in rows):
        served = split_markdown(rows, ("site_before_served", "site_served"), with_scratch=False)
        text += f"\nAs the server answers (post-processing kept from the served model), by region presence:\n\n{served}"
    (args.out / "table.md").write_text(text, encoding="utf-8")
    plot(rows, args.out / "adapt_curve.png")


def _agg(rows: list[dict[str, Any]], count: int, kind: str, key: str, region: str) -> float | None:
    vals = [r[kind][key][region] for r in rows if r["count"] == count and kind in r and r[kind][key]]
    return round(float(np.mean(vals)), 3) if vals else None


def _agg_split(rows: list[dict[str, Any]], count: int, kind: str, key: str, scope: str, region: str) -> float | None:
    picked = [r[kind][key][scope][region] for r in rows if r["count"] == count and kind in r and key in r[kind]]
    vals = [v for v in picked if v is not None]
    return round(float(np.mean(vals)), 3) if vals else None


SPLIT_KEYS = ("site_before_present", "site_present")


def split_markdown(rows: list[dict[str, Any]], keys: tuple[str, str] = SPLIT_KEYS, with_scratch: bool = True) -> str:
    """Mean over seeds per count: Dice on the cases with each region, and empty references kept empty."""
    head = ("| corrected cases | WT / TC / ET Dice, cases with the region: before -> after (scratch) | "
            "empty references segmented empty, WT / TC / ET: before -> after |")  # fmt: skip
    lines = [head, "|---|---|---|"]
    for count in sorted({r["count"] for r in rows}):
        present = " / ".join(_split_cell(rows, count, "present", g, with_scratch, keys) for g in ("wt", "tc", "et"))
        empty = " / ".join(_split_cell(rows, count, "empty", g, False, keys) for g in ("wt", "tc", "et"))
        lines.append(f"| {count} | {present} | {empty} |")
    return "\n".join(lines) + "\n"


def _split_cell(
    rows: list[dict[str, Any]], count: int, scope: str, region: str, with_scratch: bool, keys: tuple[str, str]
) -> str:
    """``before -> after (scratch)`` of one region in one scope, means over the seeds."""
    b = _agg_split(rows, count, "adapted", keys[0], scope, region)
    a = _agg_split(rows, count, "adapted", keys[1], scope, region)
    sc = _agg_split(rows, count, "scratch", keys[1], scope, region) if with_scratch else None
    return f"{b} -> {a}" + (f" ({sc})" if sc is not None else "")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Mean over seeds per count: Dice before / after / from scratch, original domain, retrain time."""
    head = ("| corrected cases | seeds | WT before -> after (scratch) | TC before -> after (scratch) | "
            "ET before -> after (scratch) | original-domain mean Dice before -> after | "
            "retrain s (scratch s) |")  # fmt: skip
    lines = [head, "|" + "---|" * 7]
    for count in sorted({r["count"] for r in rows}):
        these = [r for r in rows if r["count"] == count]
        cells = [f"{_agg(rows, count, 'adapted', 'site_before', g)} -> {_agg(rows, count, 'adapted', 'site', g)} "
                 f"({_agg(rows, count, 'scratch', 'site', g)})" for g in ("wt", "tc", "et")]  # fmt: skip
        before, after = (_agg(rows, count, "adapted", k, "mean") for k in ("original_before", "original"))
        orig = f"{before} -> {after}"
        secs = np.mean([r["adapted"]["seconds"] for r in these])
        scr = [r["scratch"]["seconds"] for r in these if "scratch" in r]
        lines.append(f"| {count} | {len(these)} | {' | '.join(cells)} | {orig} | {secs:.0f}"
                     f"{f' ({np.mean(scr):.0f})' if scr else ''} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Dice on the evaluation cases against the number of corrections, per region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["count"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, region in zip(axes, ("wt", "tc", "et")):
        for kind, key, label in (("adapted", "site_before", "served model"), ("adapted", "site", "adapted"),
                                 ("scratch", "site", "from scratch")):  # fmt: skip
            ys = [_agg(rows, c, kind, key, region) for c in counts]
            if any(y is not None for y in ys):
                ax.plot(counts, [np.nan if y is None else y for y in ys], marker="o", label=label)
        ax.set(title=region.upper(), xlabel="corrected cases", xscale="log", ylim=(0, 1))
        ax.set_xticks(counts, [str(c) for c in counts])
    axes[0].set_ylabel("Dice on the source's other cases")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
