"""Fit the segmentation's low-confidence component filter on held-out cases; write it into the sidecar.

The filter (``inference/postprocess.py``) drops components whose mean probability is below
a per-region threshold. Which thresholds help depends on the weights, so they are fitted,
the way nnU-Net decides its post-processing: on held-out cases, run the served inference
path without the filter, then for WT, TC and ET in turn pick the threshold from a fixed
grid that maximises the mean Dice of the three regions over the cases (BraTS rule: a region
empty in both prediction and reference scores 1). The curve is smoothed over neighbouring
thresholds before its maximum is taken: with a few dozen cases, one tumour-free case
flipping makes a lone spike, often next to a cliff, and a threshold there would not carry
over to new cases. A threshold is kept only when it adds at least ``MIN_GAIN`` to that
mean, so a filter that only shuffles noise stays off.

Two callers: ``brain-tumor calibrate segmentation`` (post hoc, for any weights) and the
training run, which fits the weights it publishes on the run's validation cases. The
weights file is never touched (its sha256 stays valid); the sidecar is replaced atomically
with a ``postprocess`` block and a ``-pp<digest>`` version suffix, so served answers show
which filter they used. The filter is fitted on the probabilities as served, test-time
mirroring included (``inference/inferer.py``); the calibrate command can switch the
mirroring with ``--mirror-axes``, and the thresholds are then refitted in the same step.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.inferer import InfererSpec
from ..inference.postprocess import ComponentFilter
from ..inference.segmenter import Segmenter, store_expectations
from ..labels import REGION_CHANNELS, label_to_regions, regions_to_label
from ..networks.checkpoint import read_sidecar, write_fitted_block
from ..networks.store import ModelStore
from .cases import CaseSpec
from .metrics import dice
from .seg_data import read_labelled_case

logger = logging.getLogger(__name__)

#: Thresholds tried per region (0 = no filter).
GRID: tuple[float, ...] = (0.0, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96)
#: Mean Dice (of WT/TC/ET over the cases) a threshold must add to be kept.
MIN_GAIN = 0.002
#: Fewer held-out cases than this fit nothing (a fine-tuned model then keeps its initial model's filter).
MIN_CASES = 5
SHORT = {"whole_tumor": "wt", "tumor_core": "tc", "enhancing_tumor": "et"}


@dataclass(frozen=True)
class FitCase:
    """One held-out case: region probabilities (3, x, y, z) from the network and the reference label."""

    case_id: str
    probs: np.ndarray
    truth: np.ndarray


def collect_fit_cases(segmenter: Segmenter, specs: Sequence[CaseSpec]) -> list[FitCase]:
    """Run the served pipeline without the filter on each labelled case; probabilities kept as float16."""
    cases = []
    for spec in specs:
        stack, affine, _, truth = read_labelled_case(spec)
        seg = segmenter.segment(stack, affine, postprocess=False)
        cases.append(FitCase(spec.case_id, np.asarray(seg.probs, dtype=np.float16), truth))
    return cases


def case_dice(label: np.ndarray, truth_regions: np.ndarray) -> np.ndarray:
    """Dice of WT, TC, ET of an internal label against reference region masks (3, ...)."""
    pred = label_to_regions(label)
    return np.array([dice(pred[k], truth_regions[k]) for k in range(len(REGION_CHANNELS))])


def _summary(scores: np.ndarray) -> dict[str, float]:
    """Mean Dice per region and of the three, rounded for the record."""
    means = scores.mean(axis=0)
    out = {SHORT[r]: round(float(means[k]), 4) for k, r in enumerate(REGION_CHANNELS)}
    out["mean"] = round(float(means.mean()), 4)
    return out


def smoothed(values: np.ndarray) -> np.ndarray:
    """Each value averaged with its grid neighbours (the ends with their one neighbour)."""
    padded = np.concatenate([[np.nan], np.asarray(values, dtype=float), [np.nan]])
    windows = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    return np.nanmean(windows, axis=0)


def fit_component_filter(
    cases: Sequence[FitCase], grid: Iterable[float] = GRID, min_gain: float = MIN_GAIN
) -> dict[str, Any]:
    """The fitted ``postprocess`` block: thresholds per region and the fit's before/after Dice."""
    if len(cases) < MIN_CASES:
        raise ValueError(f"post-processing fit needs at least {MIN_CASES} held-out cases, got {len(cases)}")
    grid = sorted({float(t) for t in grid} | {0.0})
    truths = [label_to_regions(np.asarray(c.truth)) for c in cases]
    raw = [regions_to_label(c.probs) for c in cases]
    before = np.array([case_dice(lab, t) for lab, t in zip(raw, truths)])
    taus: dict[str, float] = {}
    current, current_scores = raw, before
    trials: dict[str, dict[str, float]] = {}
    for region in REGION_CHANNELS:
        tried = [(current, current_scores)]
        for tau in grid[1:]:
            filt = ComponentFilter({region: tau})
            labels = [filt.apply(lab, c.probs)[0] for lab, c in zip(current, cases)]
            tried.append((labels, np.array([case_dice(lab, t) for lab, t in zip(labels, truths)])))
        means = np.array([scores.mean() for _, scores in tried])
        trials[region] = {f"{tau:g}": round(float(m), 4) for tau, m in zip(grid, means)}
        best = int(np.argmax(smoothed(means)))
        if best > 0 and means[best] - means[0] >= min_gain:
            taus[region] = grid[best]
            current, current_scores = tried[best]
        logger.info("post-processing fit, %s: threshold %s (mean Dice %.4f -> %.4f)", region,
                    taus.get(region, "off"), before.mean(), current_scores.mean())  # fmt: skip
    return {
        "min_mean_prob": taus,
        "fit": {"n": len(cases), "case_ids": [c.case_id for c in cases], "dice_before": _summary(before),
                "dice_after": _summary(current_scores), "grid": grid, "min_gain": min_gain,
                "mean_dice_by_threshold": trials,
                "selection": "maximum of the curve smoothed over neighbouring thresholds",
                "objective": "mean Dice of WT/TC/ET over the held-out cases (BraTS rule for empty regions), "
                             "regions fitted in the order WT, TC, ET"},
    }  # fmt: skip


def postprocess_digest(record: dict[str, Any]) -> str:
    """Short content hash of the thresholds and the test-time mirroring they were fitted with (the version suffix).

    Without mirroring, the hash of the thresholds alone, as before mirroring existed.
    """
    thresholds = record.get("min_mean_prob") or {}
    axes = record.get("mirror_axes")
    content = {"min_mean_prob": thresholds, "mirror_axes": axes} if axes else thresholds
    blob = json.dumps(content, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:8]


def write_postprocess(
    weights: Path, record: dict[str, Any], out_dir: Path | None = None, inferer: InfererSpec | None = None
) -> dict[str, Any]:  # fmt: skip
    """Put ``record`` (and ``inferer``, when the fit chose the mirroring) into the sidecar of ``weights``.

    See ``networks.checkpoint.write_fitted_block``; returns the new sidecar.
    """
    updates = {"inferer": inferer.to_meta()} if inferer is not None else None
    meta = write_fitted_block(weights, "segmentation", "postprocess", record, "pp", postprocess_digest(record), out_dir,
                              updates)  # fmt: skip
    logger.info("post-processing of %s: thresholds %s, version %s", weights.name,
                record.get("min_mean_prob") or "none", meta["version"])  # fmt: skip
    return meta


def fit_weights(
    weights: Path, specs: Sequence[CaseSpec], device: Any, reduced: bool, fitted_on: dict[str, Any], command: str,
    out_dir: Path | None = None, mirror_axes: tuple[int, ...] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit the filter of the segmentation ``weights`` on the labelled ``specs`` and write it; the new sidecar.

    ``mirror_axes``: serve with this test-time mirroring from now on (written into the
    sidecar's ``inferer``) and fit the filter on its probabilities; None keeps the sidecar's.
    """
    store = ModelStore("segmentation", weights, weights, device, expect=store_expectations())
    meta = store.get().meta
    segmenter = Segmenter(store, float(meta.get("spacing", 2.0)), reduced, mirror_axes=mirror_axes)
    record = fit_component_filter(collect_fit_cases(segmenter, specs))
    record["fitted_on"], record["command"] = fitted_on, command
    record["mirror_axes"] = list(segmenter.mirror_axes_for(store.get()))
    inferer = None if mirror_axes is None else replace(InfererSpec.from_meta(meta), mirror_axes=mirror_axes)
    return write_postprocess(weights, record, out_dir, inferer)


def carry_postprocess(weights: Path, init: Path | None) -> dict[str, Any] | None:
    """Give freshly published ``weights`` the filter of the model they were fine-tuned from, if it had one.

    For runs with too few held-out cases to fit on (e.g. a site's first corrections): the
    fine-tuned model stays close to its initial one, and dropping the filter would change
    what users see more than keeping it.
    """
    init_meta = read_sidecar(init)
    if init_meta is None:
        return None
    block = init_meta.get("postprocess")
    if not block or not block.get("min_mean_prob"):
        return None
    record = {k: v for k, v in block.items() if k not in ("base_version", "carried_from")}
    record["carried_from"] = str(init_meta.get("version", "unknown"))
    return write_postprocess(weights, record)
