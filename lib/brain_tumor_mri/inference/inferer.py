"""How a segmentation network is run over a whole preprocessed case: one pass or sliding window.

A full-volume pass is fastest and exact when it fits; a large input (a 1 mm model, a big
field of view, a small GPU) is instead run as MONAI ``sliding_window_inference`` over
windows of the training patch size with Gaussian blending of the overlapping logits. The
weights' sidecar says how (``inferer``: mode ``auto`` | ``full`` | ``sliding_window``, roi,
overlap); ``auto`` picks the full pass when its estimated activation memory fits the
budget (``--conf infer_memory_mb``, and on a GPU also 80 % of its free memory). Sidecars
from before this key (the shipped 2 mm weights) always get the full pass, as they did.

Test-time mirroring (``tta_mirror_axes``, e.g. ``[0, 1, 2]``): besides the plain pass, one
pass over the case mirrored along each listed working-space axis, mirrored back, and the
sigmoid probabilities of all passes averaged (nnU-Net mirrors at inference by default; our
training flips every axis, so each mirrored view is one the network learned). Sidecars
without the key run the plain pass only. The component filter is fitted on the averaged
probabilities (``training/postprocess_fit.py``), so the two are chosen together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime import autocast

logger = logging.getLogger(__name__)

FULL = "full"
SLIDING = "sliding_window"
AUTO = "auto"


@dataclass(frozen=True)
class InfererSpec:
    """How to cover a case: mode, window (roi) and overlap of the sliding window."""

    mode: str = FULL
    roi: tuple[int, int, int] | None = None
    overlap: float = 0.5
    blend: str = "gaussian"
    mirror_axes: tuple[int, ...] = ()  # test-time mirroring: one extra pass per axis, probabilities averaged

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> InfererSpec:
        """The sidecar's ``inferer`` (missing in older sidecars: the full pass)."""
        raw = meta.get("inferer")
        if not isinstance(raw, dict):
            return cls(FULL)
        roi = raw.get("roi")
        mode = str(raw.get("mode", AUTO))
        if mode not in (FULL, SLIDING, AUTO):
            raise ValueError(f"sidecar inferer mode {mode!r}: expected {FULL}, {SLIDING} or {AUTO}")
        window = (int(roi[0]), int(roi[1]), int(roi[2])) if roi else None
        axes = parse_mirror_axes(raw.get("tta_mirror_axes") or [])
        return cls(mode, window, float(raw.get("overlap", 0.5)), str(raw.get("blend", "gaussian")), axes)

    def to_meta(self) -> dict[str, Any]:
        """The sidecar form (``tta_mirror_axes`` only when mirroring, so older readers see what they know)."""
        out: dict[str, Any] = {"mode": self.mode, "roi": list(self.roi) if self.roi else None,
                               "overlap": self.overlap, "blend": self.blend}  # fmt: skip
        if self.mirror_axes:
            out["tta_mirror_axes"] = list(self.mirror_axes)
        return out


def parse_mirror_axes(axes: Sequence[Any]) -> tuple[int, ...]:
    """Spatial axes (0-2, each once, sorted) to mirror at test time; ``ValueError`` for anything else."""
    try:
        out = tuple(sorted({int(a) for a in axes}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tta_mirror_axes {list(axes)!r}: expected spatial axes 0, 1, 2") from exc
    if any(a not in (0, 1, 2) for a in out) or len(out) != len(list(axes)):
        raise ValueError(f"tta_mirror_axes {list(axes)!r}: expected distinct spatial axes among 0, 1, 2")
    return out


def mirrored_mean(
    probabilities: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, axes: Sequence[int]
) -> torch.Tensor:  # fmt: skip
    """Mean of ``probabilities`` over ``image`` (C, *spatial) and its mirror along each of ``axes``, mirrored back.

    ``probabilities`` maps an image to (K, *spatial) probabilities on the same grid. The one
    definition of test-time mirroring, for serving and for training validation alike.
    """
    total = probabilities(image).float()
    for a in axes:
        total = total + torch.flip(probabilities(torch.flip(image, dims=[a + 1])).float(), dims=[a + 1])
    return total / (1 + len(axes))


def estimate_full_pass_mb(network: dict[str, Any], shape: Sequence[int], reduced: bool) -> float:
    """Estimated peak activation memory (MB) of one full-volume U-Net pass over ``shape``.

    Skip connections of every level plus the two widest full-resolution tensors, in
    the compute dtype. Measured on this CPU it is 1.3-1.7x above the real peak (fp32:
    138-191 B/voxel measured vs 240 estimated for the 16..256 U-Net), a safety margin.
    """
    channels = list(network.get("channels", (16, 32, 64, 128, 256)))
    strides = list(network.get("strides", (2,) * (len(channels) - 1)))
    scale, per_voxel = 1.0, 0.0
    for level, c in enumerate(channels):
        per_voxel += c / scale
        if level < len(strides):
            scale *= float(strides[level]) ** 3
    per_voxel += 2 * channels[0] + int(network.get("in_channels", 4)) + int(network.get("out_channels", 3))
    return math.prod(int(n) for n in shape) * per_voxel * (2 if reduced else 4) / 1e6


def memory_budget_mb(configured_mb: float, device: torch.device) -> float:
    """The budget a full pass must fit: the configured one, and on a GPU 80 % of its free memory."""
    if device.type != "cuda":
        return float(configured_mb)
    free, _ = torch.cuda.mem_get_info(device)
    return min(float(configured_mb), 0.8 * free / 1e6)


def choose(spec: InfererSpec, network: dict[str, Any], shape: Sequence[int], reduced: bool, budget_mb: float) -> str:
    """``full`` or ``sliding_window`` for an input of ``shape`` under ``spec`` and the budget."""
    if spec.mode == FULL or spec.roi is None:
        return FULL
    if spec.mode == SLIDING:
        return SLIDING
    if all(n <= r for n, r in zip(shape, spec.roi)):
        return FULL  # one window would cover it anyway
    return FULL if estimate_full_pass_mb(network, shape, reduced) <= budget_mb else SLIDING


def run_network(
    predictor: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str, spec: InfererSpec
) -> torch.Tensor:
    """Logits (B, C, *spatial) of ``predictor`` over ``x``: one pass, or Gaussian-blended windows."""
    if mode == FULL:
        return predictor(x).float()
    from monai.inferers.utils import sliding_window_inference

    assert spec.roi is not None
    out = sliding_window_inference(
        x, spec.roi, 1, lambda w: predictor(w).float(), overlap=spec.overlap, mode=spec.blend,
        padding_mode="constant", cval=0.0,
    )  # fmt: skip
    assert isinstance(out, torch.Tensor)
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def network_logits(
    net: torch.nn.Module, x: torch.Tensor, device: torch.device, reduced: bool, channels_last: bool, mode: str,
    spec: InfererSpec,
) -> torch.Tensor:  # fmt: skip
    """Float logits of ``net`` over the batch ``x`` (already on ``device``) by ``mode``."""

    def predictor(window: torch.Tensor) -> torch.Tensor:
        """The network on one input (the whole case or a window), in its memory format."""
        if channels_last:
            window = window.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, reduced):
            return net(window)

    return run_network(predictor, x, mode, spec)
