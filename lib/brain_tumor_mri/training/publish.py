"""Whether a run's best epoch replaces the served model: a pluggable rule, and its record.

A rule receives the per-case validation scores of the initial model (None when training
from scratch) and of the trained model's best epoch, and returns a ``Decision`` with the
reason and the basis it decided on (reported in ``result.json``, ``GET /train/`` and the
sidecar). The default, ``beats_initial``, publishes when the selection key improves on the
same validation cases. A stopped run, or one without a finished epoch, never publishes,
whatever the rule says. Rules that e.g. demand a significant per-case gain, or
cross-validate the decision, plug in through ``run_training(..., publish_rule=...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .validation import ValScores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionInput:
    """What a publish rule decides on."""

    status: str  # finished | early_stopped | time_limit | stopped
    initial: ValScores | None  # the model being fine-tuned, on the validation cases; None from scratch
    trained: ValScores | None  # the best epoch; None when no epoch finished
    best_epoch: int
    metric_name: str  # e.g. "mean Dice", "balanced accuracy"


@dataclass(frozen=True)
class Decision:
    """A rule's verdict: publish or not, why, and on what basis."""

    publish: bool
    reason: str
    basis: dict[str, Any] = field(default_factory=dict)


PublishRule = Callable[[DecisionInput], Decision]


def _basis(inp: DecisionInput, rule: str) -> dict[str, Any]:
    """The summary figures a decision was based on (compact: no per-case lists)."""
    trained = inp.trained
    return {
        "rule": rule,
        "selection": inp.metric_name,
        "best_epoch": inp.best_epoch,
        "n_val": len(trained.per_case) if trained else 0,
        "initial": None if inp.initial is None else {k: round(v, 4) for k, v in inp.initial.summary.items()},
        "trained": None if trained is None else {k: round(v, 4) for k, v in trained.summary.items()},
    }


def beats_initial(inp: DecisionInput) -> Decision:
    """Publish when the best epoch's selection key beats the initial model's (or there is none)."""
    assert inp.trained is not None
    basis = _basis(inp, "beats_initial")
    best = f"best {inp.metric_name} {inp.trained.metric:.4f} at epoch {inp.best_epoch}"
    if inp.initial is None:
        return Decision(True, f"published: {best} (no initial model)", basis)
    if inp.trained.key > inp.initial.key:
        return Decision(True, f"published: {best} beats the initial model's {inp.initial.metric:.4f}", basis)
    return Decision(False, f"not published: {best} does not beat the initial model's {inp.initial.metric:.4f}", basis)


def decide(rule: PublishRule, inp: DecisionInput) -> Decision:
    """``rule``'s decision, except that stopped or epoch-less runs never publish."""
    if inp.status == "stopped":
        return Decision(False, "not published: stop requested", _basis(inp, "stopped"))
    if inp.trained is None:
        return Decision(False, "not published: no epoch completed", _basis(inp, "no_epoch"))
    decision = rule(inp)
    logger.info("%s", decision.reason)
    return decision
