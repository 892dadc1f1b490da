"""Tumour-type classifiers: a compact MONAI ``DenseNet`` for 2D slices and 3D cases.

DenseNet121 is the usual choice, but on this 2-core CPU it takes ~190-350 ms per
128x128 slice, far over the 50 ms budget, and it is too slow to train here. A DenseNet
with the same dense-block design but 32 initial features, growth rate 16 and blocks
(4, 8, 12, 8) has ~0.7 M parameters (10x fewer) and runs in ~10-14 ms per slice, which
keeps both the latency goal and a CPU training run of minutes. 2D inputs are one grey
channel at 128x128; 3D inputs are the four sequences at 4 mm in a 48^3 cube.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.networks.nets import DenseNet

from ..labels import TUMOR_CLASSES

logger = logging.getLogger(__name__)

#: Compact DenseNet defaults (see module docstring for why not DenseNet121).
CLASS_DEFAULTS: dict[str, Any] = {
    "init_features": 32,
    "growth_rate": 16,
    "block_config": (4, 8, 12, 8),
    "bn_size": 4,
    "dropout_prob": 0.0,
}

#: Input channels per input kind: one grey slice, or the four sequences.
IN_CHANNELS: dict[str, int] = {"2d": 1, "3d": 4}


def build_classification_network(
    spatial_dims: int, in_channels: int, num_classes: int = len(TUMOR_CLASSES), **overrides: Any
) -> torch.nn.Module:
    """A compact DenseNet emitting ``num_classes`` logits for 2D or 3D input."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"classification network: spatial_dims must be 2 or 3, got {spatial_dims}")
    kwargs = {**CLASS_DEFAULTS, **overrides}
    kwargs["block_config"] = tuple(kwargs["block_config"])
    return DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **kwargs)


def network_kwargs(input_kind: str, num_classes: int = len(TUMOR_CLASSES), **overrides: Any) -> dict[str, Any]:
    """The complete sidecar ``network`` dict for an input kind ("2d" or "3d"), defaults included."""
    if input_kind not in IN_CHANNELS:
        raise ValueError(f"unknown input kind {input_kind!r}; expected '2d' or '3d'")
    base = {"spatial_dims": int(input_kind[0]), "in_channels": IN_CHANNELS[input_kind], "num_classes": num_classes}
    merged = {**base, **CLASS_DEFAULTS, **overrides}
    merged["block_config"] = list(merged["block_config"])
    return merged
