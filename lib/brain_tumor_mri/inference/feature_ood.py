"""Feature-space distance: how far an input's penultimate features lie from the training classes.

Softmax and energy scores come from the last layer, which a network can drive to a confident
answer on inputs unlike anything it saw. The penultimate features (the DenseNet's pooled
activations) keep more of that information: a Mahalanobis distance to the nearest class mean
(Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples")
separates shifted inputs far better. Measured on the 2D demo weights (fitted on the 128
validation pictures of their training run): telling the in-domain test pictures from pictures
of two unseen anatomies, ROC AUC 0.85 for this distance against 0.54 for energy and for the
top probability (model card, "Low-confidence signal").

The statistics live in the sidecar's ``calibration.feature_distance`` block, fitted by
``brain-tumor calibrate`` (``training/calibration.py``): feature mean and scale, the ``k``
leading principal axes of the standardised features, the class means and a shrunk shared
precision matrix in that ``k``-dimensional space (float32, base64), and ``distance_max``, the
distance that ``acceptance`` of the fitting cases stay below.
"""

from __future__ import annotations

import base64
import binascii
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


def encode_array(values: np.ndarray) -> dict[str, Any]:
    """An array as ``{"shape", "float32_base64"}``: compact in a JSON sidecar, one line per array."""
    arr = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(arr.shape), "float32_base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(block: dict[str, Any]) -> np.ndarray:
    """The float64 array of an ``encode_array`` block (ValueError when malformed)."""
    try:
        raw = base64.b64decode(block["float32_base64"], validate=True)
        return np.frombuffer(raw, dtype="<f4").astype(np.float64).reshape(block["shape"])
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"malformed array block ({type(exc).__name__})") from exc


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
                mean=decode_array(block["mean"]),
                scale=decode_array(block["scale"]),
                axes=decode_array(block["axes"]),
                class_means=decode_array(block["class_means"]),
                precision=decode_array(block["precision"]),
                distance_max=float(block["distance_max"]),
                acceptance=float(block.get("acceptance", 0.95)),
            )
        except (KeyError, TypeError, ValueError):
            logger.error("sidecar feature_distance block is malformed; the feature check is off")
            return None
        d, k = model.mean.shape[0], model.axes.shape[0]
        if (
            model.axes.ndim != 2
            or model.class_means.ndim != 2
            or model.axes.shape != (k, d)
            or model.precision.shape != (k, k)
            or model.class_means.shape[1] != k
        ):
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
