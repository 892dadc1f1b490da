"""The simulation's bookkeeping: curves over seeds and the labels-saved figure."""

from __future__ import annotations

import pytest

from brain_tumor_dev.al_simulation import RoundResult, labels_saved, summarize_curves


def _r(seed: int, strategy: str, n: int, mean: float) -> RoundResult:
    return RoundResult(seed, strategy, 0, n, {"wt": mean, "tc": mean, "et": mean, "mean": mean}, [], 0.0)


def test_curves_average_over_seeds_with_sd():
    curves = summarize_curves([_r(0, "random", 4, 0.2), _r(1, "random", 4, 0.4)])
    mean, sd, seeds = curves["random"][4]
    assert mean == pytest.approx(0.3) and sd == pytest.approx(0.1414, abs=1e-3) and seeds == 2


def test_labels_saved_counts_first_reach_of_random_final_dice():
    rows = [_r(0, "random", n, d) for n, d in [(4, 0.1), (8, 0.2), (12, 0.3), (16, 0.5)]]
    rows += [_r(0, "epistemic", n, d) for n, d in [(4, 0.1), (8, 0.3), (12, 0.55), (16, 0.6)]]
    rows += [_r(0, "tta", n, d) for n, d in [(4, 0.1), (8, 0.2), (12, 0.3), (16, 0.4)]]
    saved = labels_saved(summarize_curves(rows))
    assert saved["target_dice"] == 0.5 and saved["baseline_labels"] == 16
    assert saved["strategies"]["epistemic"] == {
        "labels_to_reach": 12,
        "labels_saved": 4,
        "fraction_saved": 0.25,
        "final_dice": 0.6,
    }
    assert saved["strategies"]["tta"]["labels_to_reach"] is None and saved["strategies"]["tta"]["labels_saved"] is None
