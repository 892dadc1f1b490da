"""The publish decision of site adaptation: cross-validated over the few labelled cases.

With 2-10 labelled cases, one or two held-out validation cases say almost nothing about
a site's other cases (a 0.915 validation Dice on two cases went with a 0.69 WT Dice on
sixteen others). So the decision is made on **every** labelled case: the cases are split
into ``k`` folds; for each fold a candidate is fine-tuned by the same recipe on the other
folds, with no epoch selection (``final_only``), and both the candidate and the served
model segment the held-out fold. Each case is thus judged once, by a model that never
saw it, against the served model on the very same case (a paired comparison). The model
published is the one fine-tuned on all cases; the folds estimate what the recipe does to
unseen cases of the site.

The rule (``cross_validated_rule``, plugged into ``publish.decide``) publishes when

* the mean paired gain in mean Dice (WT/TC/ET) over the held-out cases exceeds
  ``margin`` (a change below a Dice point is within thresholding noise), and
* when held-out original-domain cases were available (replay cases never trained on),
  the final model's mean Dice on them dropped by at most ``max_drop``.

The basis records every fold (its cases, before/after Dice per case), the means per
region, the gain, its spread and a one-sided 90 % t lower bound (reported, not required:
with two cases any bound is too wide to demand), the original-domain check and the verdict.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .publish import Decision, DecisionInput, PublishRule

REGIONS = ("wt", "tc", "et", "mean")


def make_folds(case_ids: list[str], k: int, seed: int) -> list[list[str]]:
    """``min(k, n)`` seeded folds of near-equal size covering every case once."""
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    k = max(1, min(k, len(ids)))
    return [sorted(ids[i::k]) for i in range(k)]


@dataclass
class Fold:
    """One fold: the cases trained on and held out, and held-out per-case scores before/after."""

    index: int
    train: list[str]
    held_out: list[str]
    before: dict[str, dict[str, float]] = field(default_factory=dict)  # served model
    after: dict[str, dict[str, float]] = field(default_factory=dict)  # candidate trained without these cases
    seconds: float = 0.0


@dataclass
class Evidence:
    """The cross-validation a decision rests on."""

    folds: list[Fold]

    def deltas(self) -> dict[str, float]:
        """Paired gain in mean Dice of every held-out case (after - before)."""
        out = {}
        for f in self.folds:
            for cid in f.held_out:
                if cid in f.before and cid in f.after:
                    out[cid] = f.after[cid]["mean"] - f.before[cid]["mean"]
        return out

    def means(self, which: str) -> dict[str, float]:
        """Mean held-out Dice per region of the served model (``before``) or the candidates (``after``)."""
        rows = [getattr(f, which)[c] for f in self.folds for c in f.held_out if c in getattr(f, which)]
        return {r: round(sum(x[r] for x in rows) / len(rows), 4) if rows else float("nan") for r in REGIONS}


def gain_summary(deltas: list[float]) -> dict[str, Any]:
    """Mean, standard deviation, one-sided 90 % t lower bound and sign counts of paired gains."""
    n = len(deltas)
    mean = sum(deltas) / n if n else float("nan")
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1)) if n > 1 else float("nan")
    lower = None
    if n > 1:
        from scipy.stats import t

        lower = round(mean - float(t.ppf(0.9, n - 1)) * sd / math.sqrt(n), 4)
    return {"n_cases": n, "mean_gain": round(mean, 4), "sd": None if n < 2 else round(sd, 4),
            "lower_90": lower, "improved": sum(d > 0 for d in deltas),
            "worse": sum(d < 0 for d in deltas)}  # fmt: skip


def _original(inp: DecisionInput, checked: bool, max_drop: float) -> tuple[dict[str, Any], bool]:
    """The original-domain check: (its record, whether it passed)."""
    if not checked or inp.initial is None or inp.trained is None:
        return {"checked": False, "why": "no held-out original-domain cases (no replay datastore)"}, True
    drop = inp.initial.metric - inp.trained.metric
    record = {"checked": True, "n_cases": len(inp.trained.per_case), "before": round(inp.initial.metric, 4),
              "after": round(inp.trained.metric, 4), "drop": round(drop, 4), "max_drop": max_drop}  # fmt: skip
    return record, drop <= max_drop


def cross_validated_rule(
    evidence: Evidence, margin: float, max_drop: float, original_checked: bool, extra: dict[str, Any] | None = None
) -> PublishRule:
    """A publish rule deciding on ``evidence`` (site) and the final run's original-domain scores."""

    def rule(inp: DecisionInput) -> Decision:
        deltas = evidence.deltas()
        gain = gain_summary(list(deltas.values()))
        original, original_ok = _original(inp, original_checked, max_drop)
        basis: dict[str, Any] = {
            "rule": "cross_validated", "selection": inp.metric_name, "folds": len(evidence.folds),
            "n_cases": gain["n_cases"], "margin": margin, "site_before": evidence.means("before"),
            "site_after": evidence.means("after"), "gain": gain, "original_domain": original,
            "per_fold": [{"fold": f.index, "train": f.train, "held_out": f.held_out, "seconds": round(f.seconds, 1),
                          "before": {c: round(f.before[c]["mean"], 4) for c in f.held_out if c in f.before},
                          "after": {c: round(f.after[c]["mean"], 4) for c in f.held_out if c in f.after}}
                         for f in evidence.folds],
            **(extra or {}),
        }  # fmt: skip
        site = (f"cross-validated over {gain['n_cases']} cases in {len(evidence.folds)} folds: mean Dice "
                f"{basis['site_before']['mean']:.4f} -> {basis['site_after']['mean']:.4f} "
                f"(gain {gain['mean_gain']:+.4f}, margin {margin})")  # fmt: skip
        if not deltas or not gain["mean_gain"] > margin:
            basis["verdict"] = "refused: site gain not above the margin"
            return Decision(False, f"not published: {site}", basis)
        if not original_ok:
            basis["verdict"] = "refused: original domain dropped"
            return Decision(False, f"not published: {site}, but original-domain Dice dropped by "
                                   f"{original['drop']:.4f} > {max_drop}", basis)  # fmt: skip
        basis["verdict"] = "published"
        checked = "original domain not checked"
        if original["checked"]:
            checked = f"original-domain drop {original['drop']:.4f}"
        return Decision(True, f"published: {site}; {checked}", basis)

    return rule
