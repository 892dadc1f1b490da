"""The simulation's bookkeeping: curves over seeds, labels needed with bootstrap CIs, the archive."""

from __future__ import annotations

import pytest

from brain_tumor_dev.al_pool import ARCHIVE, HELD_OUT_START, composition, plan_held_out, plan_pool
from brain_tumor_dev.al_simulation import RoundResult, per_seed_curves, summarize_curves
from brain_tumor_dev.al_stats import labels_saved, labels_to_reach, minority_picks, per_domain_curves


def _r(seed: int, strategy: str, n: int, mean: float, domains: dict | None = None, picked: list | None = None):
    dice = {"wt": mean, "tc": mean, "et": mean, "mean": mean}
    return RoundResult(seed, strategy, 1, n, dice, [], 0.0, domains or {}, picked or [])


def test_curves_average_over_seeds_with_sd():
    curves = summarize_curves([_r(0, "random", 4, 0.2), _r(1, "random", 4, 0.4)])
    mean, sd, seeds = curves["random"][4]
    assert mean == pytest.approx(0.3) and sd == pytest.approx(0.1414, abs=1e-3) and seeds == 2


def test_labels_to_reach_first_point_at_target_or_censored():
    assert labels_to_reach({4: 0.1, 8: 0.5, 12: 0.4}, 0.45, 16) == (8, True)
    assert labels_to_reach({4: 0.1, 8: 0.2}, 0.45, 12) == (12, False)


def test_labels_saved_per_seed_target_paired_bootstrap_and_goal():
    full = {s: 0.8 for s in range(5)}  # target 0.76 for every seed
    rows = []
    for s in range(5):
        rows += [_r(s, "random", n, d) for n, d in [(4, 0.3), (8, 0.5), (12, 0.7), (16, 0.77 + 0.001 * s)]]
        rows += [_r(s, "diverse", n, d) for n, d in [(4, 0.3), (8, 0.77), (12, 0.78), (16, 0.79)]]
        rows += [_r(s, "tta", n, d) for n, d in [(4, 0.3), (8, 0.4), (12, 0.5), (16, 0.6)]]
    out = labels_saved(per_seed_curves(rows), full, batch=4)
    rnd, div, tta = (out["strategies"][k] for k in ("random", "diverse", "tta"))
    assert rnd["labels_needed_per_seed"] == [16] * 5 and rnd["labels_needed_ci95"] == [16.0, 16.0]
    assert div["fraction_saved"] == 0.5 and div["fraction_saved_ci95"] == [0.5, 0.5] and div["goal_met"] is True
    assert tta["labels_needed_per_seed"] == [20] * 5 and tta["reached_per_seed"] == [False] * 5
    assert tta["fraction_saved"] == -0.25 and tta["goal_met"] is False


def test_overlapping_intervals_do_not_meet_the_goal():
    full = {s: 1.0 for s in range(5)}
    rows = []
    for s, (nr, nd) in enumerate([(8, 4), (16, 16), (8, 4), (16, 16), (16, 4)]):
        rows += [_r(s, "random", n, 1.0 if n >= nr else 0.0) for n in (4, 8, 12, 16)]
        rows += [_r(s, "diverse", n, 1.0 if n >= nd else 0.0) for n in (4, 8, 12, 16)]
    div = labels_saved(per_seed_curves(rows), full, batch=4)["strategies"]["diverse"]
    assert div["fraction_saved"] >= 0.3 and div["goal_met"] is False  # the CIs overlap


def test_per_domain_curves_and_minority_picks():
    rows = [
        _r(0, "random", 4, 0.5, {"main": 0.6, "wild": 0.2}, ["main", "main", "wild", "main"]),
        _r(1, "random", 4, 0.5, {"main": 0.8, "wild": 0.4}, ["main", "main", "main", "main"]),
    ]
    assert per_domain_curves(rows)["random"]["wild"]["4"] == pytest.approx(0.3)
    assert minority_picks(rows, "main") == {"random": 0.125}


def test_archive_is_deterministic_uneven_and_held_out_has_every_domain():
    pool = plan_pool(80, seed=3)
    assert pool == plan_pool(80, seed=3) and pool != plan_pool(80, seed=4)
    comp = composition(pool)
    assert sum(comp["domain"].values()) == 80 and comp["domain"]["main"] >= 40
    assert comp["tumor_type"]["glioma"] > comp["tumor_type"].get("metastasis", 0)
    held = plan_held_out(2, seed=3)
    assert composition(held)["domain"] == {d.name: 2 for d in ARCHIVE}
    assert min(c.index for c in held) >= HELD_OUT_START > max(c.index for c in pool)
