"""How sure a classification answer is, and why: calibrated probabilities plus a low-confidence signal.

The weights' sidecar may carry a ``calibration`` block (``brain-tumor calibrate`` or the
training engine writes it, see ``training/calibration.py``)::

    "calibration": {"temperature": T, "ood": {"energy_max": E, "acceptance": 0.95,
                    "max_probability_min": 0.5}, ...}

Probabilities are ``softmax(logits / T)`` (T = 1 when absent). An answer is ``low``
confidence when any of these holds, each adding a reason:

- ``model.max_probability``: calibrated top probability < ``max_probability_min`` (default
  0.5: the answer is then more likely wrong than right);
- ``model.energy``: energy ``-T logsumexp(logits / T)`` > ``energy_max``, i.e. less
  familiar than ``acceptance`` of the validation cases (only when fitted: energies have no
  model-independent scale, so there is no default threshold);
- ``model.feature_distance``: the penultimate features lie farther from the nearest class
  than ``acceptance`` of the validation cases (``feature_ood.py``; only when fitted);
- ``input.*``: an input check failed (``input_checks.py``);
- ``consistency.*``: the segmentation of the same case contradicts the answer (``consistency.py``).

Softmax-based scores are known to miss inputs a network is confidently wrong on; the input
checks and the consistency rule cover the clear cases, the cross-domain evaluation
(``brain-tumor classify --evaluate``) measures the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .feature_ood import FeatureModel
from .input_checks import Reason

logger = logging.getLogger(__name__)

#: Documented defaults when a sidecar has no calibration block.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_PROBABILITY_MIN = 0.5
HIGH, LOW = "high", "low"


@dataclass(frozen=True)
class ConfidencePolicy:
    """Temperature and thresholds of one model, read from its sidecar."""

    temperature: float = DEFAULT_TEMPERATURE
    max_probability_min: float = DEFAULT_MAX_PROBABILITY_MIN
    energy_max: float | None = None
    source: str = "default"  # "default" (no calibration block) | "calibrated"
    feature: FeatureModel | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ConfidencePolicy:
        """The policy of a sidecar; defaults where the calibration block is absent or partial."""
        cal = meta.get("calibration")
        if not isinstance(cal, dict):
            return cls()
        ood = cal.get("ood") or {}
        t = float(cal.get("temperature", DEFAULT_TEMPERATURE))
        if not np.isfinite(t) or t <= 0:
            logger.error("sidecar temperature %r is invalid; using 1.0", t)
            t = DEFAULT_TEMPERATURE
        energy_max = ood.get("energy_max")
        return cls(
            temperature=t,
            max_probability_min=float(ood.get("max_probability_min", DEFAULT_MAX_PROBABILITY_MIN)),
            energy_max=None if energy_max is None else float(energy_max),
            source="calibrated",
            feature=FeatureModel.from_meta(cal.get("feature_distance")),
        )

    def as_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_probability_min": self.max_probability_min,
                "energy_max": self.energy_max, "source": self.source,
                "feature_distance_max": None if self.feature is None else self.feature.distance_max}  # fmt: skip


@dataclass(frozen=True)
class Confidence:
    """The level of an answer, the reasons for it, and the scores behind it."""

    level: str
    reasons: tuple[Reason, ...]
    max_probability: float
    margin: float
    energy: float
    policy: ConfidencePolicy
    feature_distance: float | None = None

    def with_reasons(self, extra: list[Reason] | tuple[Reason, ...]) -> Confidence:
        """A copy with ``extra`` reasons added (and so ``low`` when any is given)."""
        reasons = self.reasons + tuple(extra)
        return replace(self, reasons=reasons, level=LOW if reasons else HIGH)

    def as_params(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "reasons": [r.as_params() for r in self.reasons],
            "max_probability": round(self.max_probability, 6),
            "margin": round(self.margin, 6),
            "energy": round(self.energy, 6),
            "feature_distance": None if self.feature_distance is None else round(self.feature_distance, 4),
            "thresholds": self.policy.as_params(),
        }


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable log-softmax of ``logits / temperature`` along the last axis (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def calibrated_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` along the last axis (one (C,) vector or a batch (N, C))."""
    return np.exp(log_softmax(logits, temperature))


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``-T * logsumexp(logits / T)`` along the last axis: lower for inputs like the training data.

    The energy score of Liu et al. 2020 ("Energy-based out-of-distribution detection").
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    m = z.max(axis=-1)
    return -float(temperature) * (m + np.log(np.exp(z - m[..., None]).sum(axis=-1)))


def assess(
    probs: np.ndarray,
    logits: np.ndarray,
    policy: ConfidencePolicy,
    input_reasons: list[Reason],
    features: np.ndarray | None = None,
) -> Confidence:
    """Confidence of one answer from calibrated ``probs``, raw ``logits``, input-check reasons, features."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64))[::-1][:2]
    max_p = float(top2[0])
    margin = float(top2[0] - top2[1]) if top2.size > 1 else max_p
    e = float(energy_score(logits, policy.temperature))
    reasons = list(input_reasons)
    if max_p < policy.max_probability_min:
        reasons.append(Reason("model.max_probability", f"top probability {max_p:.2f} is below "
                              f"{policy.max_probability_min:.2f}: no class is clearly favoured"))  # fmt: skip
    if policy.energy_max is not None and e > policy.energy_max:
        reasons.append(Reason("model.energy", f"energy {e:.2f} is above {policy.energy_max:.2f}: the network "
                              "responds less to this input than to the validation cases (unfamiliar)"))  # fmt: skip
    distance = None
    if policy.feature is not None and features is not None:
        distance = policy.feature.distance(features)
        if distance > policy.feature.distance_max:
            limit, share = policy.feature.distance_max, 100 * policy.feature.acceptance
            reasons.append(Reason("model.feature_distance", f"the image's features lie farther from every class "
                                  f"({distance:.0f}) than {share:.0f} % of the validation cases (<= {limit:.0f}): "
                                  "unlike the training data"))  # fmt: skip
    return Confidence(LOW if reasons else HIGH, tuple(reasons), max_p, margin, e, policy, distance)
