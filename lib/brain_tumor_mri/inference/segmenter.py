"""Segmentation of a four-sequence case: preprocess, network over the case, restore.

The network covers the case in one full-volume pass, or by Gaussian-blended sliding
windows when the weights' sidecar allows it and a full pass would not fit the memory
budget, averaged over the sidecar's test-time mirrors (``inference.inferer``); the label is
then cleaned of components the network is unsure of, by the thresholds the weights' sidecar
carries (``inference.postprocess``).
Used by the MONAI Label infer task, the offline ``segment`` command, the benchmark and
the lesion-type fit, so they all run the same code (training validation and
active-learning scoring read the network's output before post-processing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..imageio import nonzero_mask
from ..labels import REGION_CHANNELS, SEG_LABELS, SEQUENCES, regions_to_label
from ..layout import SEG_WEIGHTS, published_dir
from ..networks.checkpoint import LoadedModel
from ..networks.store import ModelStore
from ..transforms.preprocess import Prepared, prepare_case, restore
from .inferer import InfererSpec, choose, memory_budget_mb, mirrored_mean, network_logits
from .measure import tumor_measurements, voxel_volume_ml
from .postprocess import ComponentFilter, Dropped

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segmentation:
    """Label on the input grid (uint8, internal values) with measurements and provenance."""

    label: np.ndarray
    probs: np.ndarray  # (3, x, y, z) region probabilities on the input grid
    measurements: dict[str, Any]
    model_version: str
    inferer: str = "full"  # full | sliding_window
    candidates: list[dict[str, Any]] = field(default_factory=list)  # components post-processing removed
    network_label: np.ndarray | None = None  # before post-processing (what the 3D type is read from); None: = label

    @property
    def unfiltered(self) -> np.ndarray:
        """The network's thresholded output before post-processing (``label`` when nothing was removed).

        The 3D tumour type and the consistency rule's ``no_tumor`` and multiple-lesion checks read
        this one: the lesion-type model was fitted on it, and a safety rule should see every
        lesion the network found, sure or not (a scan whose only tumour is a low-confidence
        candidate must not be a confident ``no_tumor``, several lesions some of them unsure are
        still several lesions). A named type is confirmed only by a lesion of ``label``
        (``consistency.py``).
        """
        return self.label if self.network_label is None else self.network_label


def store_expectations() -> dict[str, Any]:
    """Sidecar keys a segmentation model must carry, with the values this code is built for."""
    return {"sequences": list(SEQUENCES), "regions": list(REGION_CHANNELS), "labels": dict(SEG_LABELS)}


def segmentation_store(studies: Path, weights_dir: Path, device: torch.device, reduced: bool) -> ModelStore:
    """The segmentation model a datastore is served with: its published weights first, then the shipped ones."""
    return ModelStore("segmentation", published_dir(studies) / SEG_WEIGHTS, weights_dir / SEG_WEIGHTS, device,
                      channels_last=reduced and device.type == "cpu", expect=store_expectations())  # fmt: skip


def enable_mc_dropout(network: torch.nn.Module, enabled: bool) -> None:
    """Switch only dropout layers to train mode (Monte-Carlo dropout) or back to eval."""
    for m in network.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout3d, torch.nn.Dropout2d)):
            m.train(enabled)


class Segmenter:
    """Runs the served segmentation model on (4, x, y, z) arrays."""

    def __init__(
        self, store: ModelStore, spacing: float, reduced_precision: bool, memory_mb: float = 2048.0,
        mirror_axes: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        """``mirror_axes`` overrides the sidecar's test-time mirroring (the post-processing fit chooses it)."""
        self.store = store
        self.spacing = spacing
        self.reduced = reduced_precision
        self.memory_mb = memory_mb
        self.mirror_axes = mirror_axes

    def inferer_for(self, model: LoadedModel, shape: tuple[int, ...]) -> tuple[str, InfererSpec]:
        """``full`` or ``sliding_window`` for a prepared image of ``shape`` with ``model``."""
        spec = InfererSpec.from_meta(model.meta)
        budget = memory_budget_mb(self.memory_mb, self.store.device)
        return choose(spec, model.meta.get("network", {}), shape, self.reduced, budget), spec

    def working_spacing(self, meta: dict | None = None) -> float:
        """The spacing the served weights were trained at (sidecar), else the configured one."""
        meta = self.store.get().meta if meta is None else meta
        return float(meta.get("spacing", self.spacing))

    def prepare(
        self, stack: np.ndarray, affine: np.ndarray, label: np.ndarray | None = None, model: LoadedModel | None = None
    ) -> Prepared:
        """The shared preprocessing at the spacing of ``model`` (default: the served one)."""
        meta = (model or self.store.get()).meta
        return prepare_case(stack, affine, self.working_spacing(meta), label)

    @torch.inference_mode()
    def forward(
        self,
        image: torch.Tensor,
        *,
        flips: tuple[int, ...] = (),
        mc_dropout: bool = False,
        model: LoadedModel | None = None,
    ) -> torch.Tensor:
        """Region probabilities (3, *window) for one preprocessed image (C, *window).

        Pass the ``model`` the image was prepared for, so a model published between the two
        steps cannot pair one model's spacing with another's weights.
        """
        model = model or self.store.get()
        net = model.network
        mode, spec = self.inferer_for(model, tuple(image.shape[1:]))
        x = image[None].to(self.store.device)
        if flips:
            x = torch.flip(x, dims=[d + 2 for d in flips])
        enable_mc_dropout(net, mc_dropout)
        try:
            logits = network_logits(net, x, self.store.device, self.reduced, self.store.channels_last, mode, spec)
        finally:
            enable_mc_dropout(net, False)
        probs = torch.sigmoid(logits.float())
        if flips:
            probs = torch.flip(probs, dims=[d + 2 for d in flips])
        return probs[0].cpu()

    def mirror_axes_for(self, model: LoadedModel) -> tuple[int, ...]:
        """The test-time mirror axes ``model`` is served with (this segmenter's override, else its sidecar's)."""
        return self.mirror_axes if self.mirror_axes is not None else InfererSpec.from_meta(model.meta).mirror_axes

    def probabilities(self, image: torch.Tensor, *, model: LoadedModel | None = None) -> torch.Tensor:
        """Region probabilities (3, *window) as served: the plain pass averaged with the test-time mirrors."""
        model = model or self.store.get()
        return mirrored_mean(lambda x: self.forward(x, model=model), image, self.mirror_axes_for(model))

    def segment(self, stack: np.ndarray, affine: np.ndarray, *, postprocess: bool = True) -> Segmentation:
        """Full pipeline on the input grid: label, probabilities and measurements.

        Voxels where no sequence has signal (outside a skull-stripped brain) get probability 0:
        on held-out generated cases the network put a confident rim of "edema" into the empty
        space beside extra-axial tumours (pituitary, meningioma), about half of its excess
        whole tumour there. ``postprocess=False`` returns the thresholded network output
        without the sidecar's component filter (what the filter is fitted on).
        """
        model = self.store.get()  # one model for the whole request, even across a hot swap
        prepared = self.prepare(stack, affine, model=model)
        probs = restore(self.probabilities(prepared.image, model=model), prepared.geometry)
        # no tumour where no sequence has signal: the brain of skull-stripped input, as the lesion features see it;
        # a zero-filled missing sequence adds nothing, input without a zero background is unchanged.
        # C order like probs: NIfTI loads in Fortran order, and a 1 mm multiply by a Fortran-ordered
        # mask took 135 ms against 24 ms (+47 ms for the conversion)
        probs *= np.ascontiguousarray(nonzero_mask(stack))
        raw = regions_to_label(probs)
        label, dropped = raw, list[Dropped]()
        if postprocess:
            label, dropped = ComponentFilter.from_meta(model.meta).apply(raw, probs)
        mode, _ = self.inferer_for(model, tuple(prepared.image.shape[1:]))
        voxel_ml = voxel_volume_ml(affine)
        candidates = [d.as_params(affine, voxel_ml) for d in dropped]
        return Segmentation(label, probs, tumor_measurements(label, affine), model.version, mode, candidates,
                            raw if dropped else None)  # fmt: skip
