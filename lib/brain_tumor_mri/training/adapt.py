"""Site adaptation: the fine-tuning recipe used when a site's corrections retrain the served model.

A site labels a handful of cases (2-16) from its own scanner and presses *Train*. The
plain fine-tuning run splits those few cases into training and validation, selects the
best epoch on one or two validation cases and early-stops on them: it trains on fewer
cases than there are and chooses its weights on noise. The recipe instead

* trains on **every** labelled case for a **fixed budget** of patches that grows with the
  number of cases (``Recipe.patches``), validating only after the last epoch and keeping
  that epoch (``TrainOptions.final_only``): no epoch is chosen on the cases it is judged on;
* uses a peak learning rate of 1e-4 (a tenth of the shipped model's from-scratch 1e-3) with
  one warm-up epoch at 30 % (AdamW's moment estimates start empty) and cosine decay to 2 %.
  Measured on one draw of 2 colin27 cases (README, site adaptation): 3e-4 lowered the
  held-out site Dice (0.526 -> 0.512) and the original domain a lot (0.713 -> 0.584);
  1e-4 raised the site slightly (0.533) and forgot less (0.636). One rate for all layers:
  a per-layer-group rate was not measured to help, so it is not used;
* lowers the domain randomisation to half strength: the site's own contrast is what the
  model must learn, but a few cases still need intensity augmentation against overfitting;
* keeps the initial model's patch (its sidecar), so the CPU trains on 64^3 patches
  (about 0.3 s a step of two patches on two cores, bf16: 28-30 s per 100 steps in a
  fine-tune of the shipped model, against 3-10 s a step for 96^3), and its share of
  tumour-centred patches (``fg_fraction`` of its training record), so a few cases do not
  shift the balance of tumour and background it learned (not measured to matter: with two
  draws of 4 colin27 corrections the site's WT Dice was 0.546 with the engine's 0.5 and 0.549
  with the shipped model's 0.33);
* never randomises the domain more strongly than the initial model was trained with (the
  shipped model: 0.25);
* replays the original domain (``TrainOptions.replay_studies``) at ``replay_fraction`` of
  the patches, minus ``replay_check`` cases held out to check that it did not forget;
* splits an optional wall-time budget (``adapt_minutes``) evenly over its runs (the
  cross-validation folds and the final run, ``adapt_run``), so a retrain ends in time.

Every field the user set explicitly (``TrainOptions.explicit``: request keys, CLI flags)
wins over the recipe.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..networks.checkpoint import sidecar_path
from .options import TrainOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """The site-adaptation settings (see module docstring for why each value)."""

    lr: float = 1e-4
    schedule: str = "warmup_cosine"
    domain_random: float = 0.5
    patches_base: int = 64  # patches of a run on one case
    patches_per_case: int = 24  # more per additional training case ...
    patches_max: int = 480  # ... up to this (about 6.5 CPU-minutes at 64^3, batch 2)
    samples_per_epoch: int = 16

    def patches(self, n_train: int) -> int:
        """Training patches of a run on ``n_train`` cases."""
        return min(self.patches_max, self.patches_base + self.patches_per_case * max(0, n_train - 1))

    def epochs(self, n_train: int) -> int:
        """Epochs of ``samples_per_epoch`` patches that make ``patches(n_train)``."""
        return max(1, math.ceil(self.patches(n_train) / self.samples_per_epoch))

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for the decision basis."""
        return {"lr": self.lr, "schedule": self.schedule, "domain_random": self.domain_random,
                "patches_base": self.patches_base, "patches_per_case": self.patches_per_case,
                "patches_max": self.patches_max, "samples_per_epoch": self.samples_per_epoch}  # fmt: skip


RECIPE = Recipe()


def _sidecar(init: Path | None) -> dict[str, Any]:
    """The initial model's sidecar ({} when there is none or it is unreadable)."""
    if init is None:
        return {}
    try:
        meta = json.loads(sidecar_path(init).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def initial_patch(init: Path | None) -> int:
    """The cubic patch edge recorded in the initial model's sidecar (0 when unknown)."""
    patch = _sidecar(init).get("patch")
    return int(patch[0]) if isinstance(patch, list) and patch and int(patch[0]) % 16 == 0 else 0


def initial_sampling(init: Path | None) -> dict[str, float]:
    """The foreground share and domain-randomisation strength the initial model was trained with.

    From the sidecar's training record (``training.options``); only values in [0, 1] are kept.
    """
    training = _sidecar(init).get("training")
    options = training.get("options") if isinstance(training, dict) else None
    out: dict[str, float] = {}
    for key in ("fg_fraction", "domain_random"):
        value = options.get(key) if isinstance(options, dict) else None
        if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
            out[key] = float(value)
    return out


def recipe_options(
    opts: TrainOptions, n_train: int, init: Path | None, runs: int = 1, recipe: Recipe = RECIPE
) -> TrainOptions:
    """``opts`` with the recipe's settings for a run on ``n_train`` cases, one of ``runs``.

    Fields in ``opts.explicit`` are kept as the user set them.
    """
    changes: dict[str, Any] = {
        "lr": recipe.lr, "schedule": recipe.schedule, "domain_random": recipe.domain_random,
        "samples_per_epoch": recipe.samples_per_epoch, "epochs": recipe.epochs(n_train),
    }  # fmt: skip
    patch = initial_patch(init)
    if patch and not opts.patch:
        changes["patch"] = patch
    sampling = initial_sampling(init)
    if "fg_fraction" in sampling:
        changes["fg_fraction"] = sampling["fg_fraction"]
    if "domain_random" in sampling:
        changes["domain_random"] = min(recipe.domain_random, sampling["domain_random"])
    if opts.adapt_minutes > 0:
        changes["max_minutes"] = opts.adapt_minutes / max(1, runs)
    kept = {k: v for k, v in changes.items() if k not in opts.explicit}
    return opts.replace(**kept, final_only=True).checked()
