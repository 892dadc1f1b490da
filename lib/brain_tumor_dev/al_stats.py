"""Statistics of simulated learning curves: labels needed to reach a target, with bootstrap CIs.

The question the simulation answers is "how many labels does each strategy need to reach
95 % of the Dice the full pool gives?". Per seed, a curve reaches the target at its first
point at or above it; a curve that never does is *censored* at its last label count plus
one batch (a lower bound, flagged in the output). Seeds are resampled with replacement,
the same resample for every strategy (paired: a seed's initial model and labelled set are
shared by all strategies), to give 95 % percentile intervals of the mean labels needed
and of the fraction saved against random.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Share of the full-pool Dice a curve must reach.
TARGET_FRACTION = 0.95
BOOTSTRAP = 2000


def labels_to_reach(curve: dict[int, float], target: float, censor_at: int) -> tuple[int, bool]:
    """(first label count whose Dice >= ``target``, reached?); ``censor_at`` when never."""
    for n in sorted(curve):
        if curve[n] >= target:
            return n, True
    return censor_at, False


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 3), round(float(np.percentile(values, 97.5)), 3)]


def labels_saved(
    per_seed: dict[str, dict[int, dict[int, float]]],
    full_pool: dict[int, float],
    batch: int,
    baseline: str = "random",
    seed: int = 0,
) -> dict[str, Any]:
    """Labels to reach ``TARGET_FRACTION`` of each seed's full-pool Dice, per strategy, with CIs.

    ``per_seed``: strategy -> seed -> labelled count -> mean Dice; ``full_pool``: seed ->
    Dice of the model trained on the whole pool.
    """
    seeds = sorted(full_pool)
    needed: dict[str, np.ndarray] = {}
    reached: dict[str, list[bool]] = {}
    for name, curves in per_seed.items():
        rows = []
        for s in seeds:
            curve = curves[s]
            rows.append(labels_to_reach(curve, TARGET_FRACTION * full_pool[s], max(curve) + batch))
        needed[name] = np.array([n for n, _ in rows], np.float64)
        reached[name] = [r for _, r in rows]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(seeds), size=(BOOTSTRAP, len(seeds)))
    means = {name: v[draws].mean(axis=1) for name, v in needed.items()}
    out: dict[str, Any] = {
        "target": f"{TARGET_FRACTION:.0%} of the full-pool Dice (per seed)",
        "baseline": baseline,
        "full_pool_dice": {str(s): round(full_pool[s], 4) for s in seeds},
        "strategies": {},
    }
    for name, v in needed.items():
        entry: dict[str, Any] = {
            "labels_needed_per_seed": v.astype(int).tolist(),
            "reached_per_seed": reached[name],
            "labels_needed_mean": round(float(v.mean()), 2),
            "labels_needed_ci95": _interval(means[name]),
        }
        if baseline in needed and name != baseline:
            base_mean = float(needed[baseline].mean())
            frac = means[name] / means[baseline]
            entry["fraction_saved"] = round(1.0 - float(v.mean()) / base_mean, 3) if base_mean else None
            entry["fraction_saved_ci95"] = [round(1.0 - b, 3) for b in reversed(_interval(frac))]
            base_ci, own_ci = _interval(means[baseline]), entry["labels_needed_ci95"]
            entry["goal_met"] = bool(
                entry["fraction_saved"] is not None
                and entry["fraction_saved"] >= 0.30
                and own_ci[1] < base_ci[0]
                and all(reached[name])
            )
        out["strategies"][name] = entry
    return out


def per_domain_curves(rows: list[Any]) -> dict[str, dict[str, dict[str, float]]]:
    """strategy -> domain -> labelled count -> mean Dice over seeds (from round results)."""
    acc: dict[str, dict[str, dict[int, list[float]]]] = {}
    for r in rows:
        for domain, value in r.domains.items():
            acc.setdefault(r.strategy, {}).setdefault(domain, {}).setdefault(r.n_labelled, []).append(value)
    return {
        s: {d: {str(n): round(float(np.mean(v)), 4) for n, v in sorted(c.items())} for d, c in doms.items()}
        for s, doms in acc.items()
    }


def minority_picks(rows: list[Any], majority: str) -> dict[str, float]:
    """Per strategy: share of cases it picked (rounds >= 1) from domains other than ``majority``."""
    acc: dict[str, list[bool]] = {}
    for r in rows:
        if r.round < 1:
            continue  # round 0 lists the shared random initial set, not a pick of the strategy
        acc.setdefault(r.strategy, []).extend(d != majority for d in r.picked_domains)
    return {s: round(float(np.mean(v)), 3) if v else 0.0 for s, v in acc.items()}
