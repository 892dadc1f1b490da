"""A site-adaptation run: cross-validation folds, then the final model on every labelled case.

``run_adaptation`` is what ``run.run_training`` does for a segmentation model fine-tuned
with ``opts.adapt`` (the server's *Train* on a site's corrections): ``k`` fold runs of the
recipe (``adapt.recipe_options``) on the engine, each judged on its held-out fold against
the served model, then one run on all cases whose publish decision is the
cross-validated rule (``crossval``). Replay cases (``opts.replay_studies``) are mixed into
every run at ``opts.replay_fraction``, except ``opts.replay_check`` of them, held out as
the final run's validation set: the original-domain check. Every score (folds, before and
after, original domain) is of the answer as served: thresholded, then the initial model's
component filter, which the published model carries. Folds land in
``RUN_DIR/cv/fold-<i>``; the final run and ``result.json`` in ``RUN_DIR``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..imageio import InputError
from .adapt import RECIPE, recipe_options
from .cases import REPLAY, CaseSpec, segmentation_cases
from .crossval import Evidence, Fold, cross_validated_rule, make_folds
from .options import TrainOptions
from .publish import Decision, DecisionInput
from .result import TrainResult
from .run_model import run_model
from .seg_model import SegModel, served_filter

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


def _never(inp: DecisionInput) -> Decision:
    """Fold runs only measure; they never publish."""
    return Decision(False, "cross-validation fold: measured, not published", {"rule": "cv_fold"})


def _scored_as(init: Path) -> dict[str, Any]:
    """What the decision's Dice scores are of: the served answer, with the carried filter when there is one."""
    filt = served_filter(init, adapt=True)
    if filt is None:
        return {"postprocess": None, "what": "thresholded network output (the initial model has no filter)"}
    return {
        "postprocess": dict(filt.min_mean_prob),
        "what": "as served: thresholded, then the initial model's component filter (carried on publishing)",
    }


def split_replay(specs: list[CaseSpec], n_check: int, seed: int) -> tuple[list[CaseSpec], list[CaseSpec]]:
    """(replayed, held out for the original-domain check): ``n_check`` seeded cases held out, the rest replayed.

    At least one case is always replayed when there are any.
    """
    ids = sorted(s.case_id for s in specs)
    random.Random(seed).shuffle(ids)
    check = set(ids[: min(n_check, max(0, len(ids) - 1))])
    return [s for s in specs if s.case_id not in check], [s for s in specs if s.case_id in check]


def run_adaptation(
    opts: TrainOptions, init: Path, run_dir: Path, out: Path, progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:  # fmt: skip
    """Cross-validate the recipe on the labelled cases, train on all of them, decide and publish."""
    specs = segmentation_cases(opts.studies)
    if len(specs) < 2:
        raise InputError(
            f"site adaptation needs at least 2 labelled cases to cross-validate its publish decision, found "
            f"{len(specs)}; label another case (or train with adapt=false)"
        )
    replay_all = segmentation_cases(opts.replay_studies, REPLAY) if opts.replay_studies else []
    replay, check = split_replay(replay_all, opts.replay_check, opts.seed)
    by_id = {s.case_id: s for s in specs}
    folds = make_folds(list(by_id), opts.cv_folds, opts.seed)
    runs = len(folds) + 1
    evidence = Evidence([])
    for i, held in enumerate(folds, 1):
        train = [by_id[c] for c in sorted(by_id) if c not in held]
        fold_opts = recipe_options(opts, len(train), init, runs).replace(run_dir=run_dir / "cv" / f"fold-{i}")
        logger.info("site adaptation: fold %d/%d, training on %s, held out %s", i, len(folds),
                    [s.case_id for s in train], held)  # fmt: skip
        fold_dir = run_dir / "cv" / f"fold-{i}"
        res = run_model(SegModel(fold_opts, init), fold_opts, (train, [by_id[c] for c in held], replay),
                        fold_dir / "never-published.pt", fold_dir, progress, should_stop, _never)  # fmt: skip
        if res.status == "stopped":
            res.decision = "not published: stop requested"
            return res
        evidence.folds.append(Fold(i, [s.case_id for s in train], held, res.validation.get("initial") or {},
                                   res.validation.get("trained") or {}, res.seconds))  # fmt: skip
    final_opts = recipe_options(opts, len(specs), init, runs)
    extra = {"recipe": {**RECIPE.to_record(), "epochs": final_opts.epochs, "lr": final_opts.lr,
                        "patch": final_opts.patch, "max_minutes_per_run": final_opts.max_minutes},
             "replay": {"studies": str(opts.replay_studies) if opts.replay_studies else None,
                        "fraction": opts.replay_fraction, "replayed": len(replay),
                        "held_out": [s.case_id for s in check]},
             "scored_as": _scored_as(init)}  # fmt: skip
    rule = cross_validated_rule(evidence, opts.publish_margin, opts.original_max_drop, bool(check), extra)
    start = time.monotonic()
    logger.info("site adaptation: final run on all %d cases (%d replayed original-domain cases at %.2f)",
                len(specs), len(replay), opts.replay_fraction)  # fmt: skip
    result = run_model(SegModel(final_opts, init), final_opts, (specs, check, replay), out, run_dir, progress,
                       should_stop, rule)  # fmt: skip
    result.seconds = round(result.seconds + sum(f.seconds for f in evidence.folds), 1)
    result.timings["final_run_s"] = round(time.monotonic() - start, 1)
    return result
