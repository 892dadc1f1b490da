"""Feature-space distance: how far an input's penultimate features lie from the training classes.

Softmax and energy scores come from the last layer, which a network can drive to a confident
answer on inputs unlike anything it saw. The penultimate features (the DenseNet's pooled
activations) keep more of that information: a Mahalanobis distance to the nearest class mean
(Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples")
separates shifted inputs far better. Measured on the 2D demo weights: telling the in-domain
test pictures from pictures of two unseen anatomies, ROC AUC 0.89 for this distance against
0.54 for energy and for the top probability (model card, "Low-confidence signal").

The statistics live in the sidecar's ``calibration.feature_distance`` block, fitted by
``brain-tumor calibrate`` (``training/calibration.py``): feature mean and scale, the ``k``
leading principal axes of the standardised features, the class means and a shrunk shared
precision matrix in that ``k``-dimensional space, and ``distance_max``, the distance that
``acceptance`` of the fitting cases stay below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def logits_and_features(network: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and penultimate features of a MONAI DenseNet (``features`` then ``class_layers``).

    The same computation as ``network(x)``, split before the last linear layer (``out``);
    other networks give ``None`` features.
    """
    layers = getattr(network, "class_layers", None)
    if not hasattr(network, "features") or layers is None or not hasattr(layers, "out"):
        return network(x), None
    features: Any = network.features
    h = features(x)
    feats = None
    for name, layer in layers.named_children():
        if name == "out":
            feats = h
        h = layer(h)
    return h, feats


@dataclass(frozen=True)
class FeatureModel:
    """Class-conditional Gaussian with a shared covariance in a PCA subspace of the features."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    axes: np.ndarray  # (k, D)
    class_means: np.ndarray  # (C, k)
    precision: np.ndarray  # (k, k)
    distance_max: float
    acceptance: float

    @classmethod
    def from_meta(cls, block: dict[str, Any] | None) -> FeatureModel | None:
        """The model of a sidecar's ``calibration.feature_distance`` block (None when absent or malformed)."""
        if not isinstance(block, dict):
            return None
        try:
            model = cls(
                mean=np.asarray(block["mean"], dtype=np.float64),
                scale=np.asarray(block["scale"], dtype=np.float64),
                axes=np.asarray(block["axes"], dtype=np.float64),
                class_means=np.asarray(block["class_means"], dtype=np.float64),
                precision=np.asarray(block["precision"], dtype=np.float64),
                distance_max=float(block["distance_max"]),
                acceptance=float(block.get("acceptance", 0.95)),
            )
        except (KeyError, TypeError, ValueError):
            logger.error("sidecar feature_distance block is malformed; the feature check is off")
            return None
        d, k = model.mean.shape[0], model.axes.shape[0]
        if model.axes.shape != (k, d) or model.precision.shape != (k, k) or model.class_means.shape[1] != k:
            logger.error("sidecar feature_distance block has inconsistent shapes; the feature check is off")
            return None
        return model

    def distance(self, features: np.ndarray) -> float:
        """Squared Mahalanobis distance of one feature vector to the nearest class mean."""
        f = np.asarray(features, dtype=np.float64).reshape(-1)
        if f.shape[0] != self.mean.shape[0]:
            raise ValueError(f"feature vector of length {f.shape[0]}, the sidecar expects {self.mean.shape[0]}")
        z = ((f - self.mean) / self.scale) @ self.axes.T
        diff = z[None, :] - self.class_means
        return float(np.einsum("ij,jk,ik->i", diff, self.precision, diff).min())
