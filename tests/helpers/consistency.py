"""Deterministic models and cases for the consistency-rule tests.

The rule's tests must not depend on what a trained model happens to find (the shipped
weights change with every retraining), so they use hand-built weights whose behaviour is
known exactly: a segmentation "U-Net" that marks as whole tumour every voxel whose FLAIR
z-score exceeds a threshold, and classifiers that always answer one class with a fixed
probability. The cases are brain-sized ellipsoids with bright spherical lesions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from brain_tumor_mri.imageio import save_nifti
from brain_tumor_mri.labels import REGION_CHANNELS, SEG_LABELS, SEQUENCES, TUMOR_CLASSES
from brain_tumor_mri.networks.checkpoint import save_model
from brain_tumor_mri.networks.classifier import build_classification_network, network_kwargs
from brain_tumor_mri.networks.factory import build_segmentation_network
from tests.helpers.classification import TINY_2D, TINY_3D, TINY_NET

#: A two-level U-Net without down-sampling: small enough to set every weight by hand.
THRESHOLD_NET = {"channels": [4, 4], "strides": [1], "num_res_units": 0, "norm": "batch", "dropout": 0.0}
SPACING_MM = 4.0
FLAIR = SEQUENCES.index("t2f")


def save_threshold_segmenter(path: Path, z_threshold: float = 4.0, gain: float = 10.0) -> Path:
    """Segmentation weights: whole tumour (edema) where the normalised FLAIR exceeds ``z_threshold``.

    Layer 0 and its batch norm / PReLU pass the four sequences through unchanged, the inner
    block outputs zeros, and the last (transposed) convolution maps the FLAIR channel to the
    WT logit ``gain * (z - z_threshold)``; TC and ET logits are constant -20 (never set).
    """
    net = build_segmentation_network(**THRESHOLD_NET)
    state = net.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            value.zero_()
            if key.endswith(("N.weight", "N.running_var", "A.weight")):
                value.fill_(1.0)
        for c in range(4):
            state["model.0.conv.weight"][c, c, 1, 1, 1] = 1.0
        state["model.2.conv.weight"][FLAIR, 0, 1, 1, 1] = gain
        state["model.2.conv.bias"][:] = torch.tensor([-gain * z_threshold, -20.0, -20.0])
    net.load_state_dict(state)
    meta = {"kind": "segmentation", "network": THRESHOLD_NET, "spacing": SPACING_MM, "sequences": list(SEQUENCES),
            "regions": list(REGION_CHANNELS), "labels": dict(SEG_LABELS)}  # fmt: skip
    save_model(net, path, meta)
    return path


def save_constant_classifier(path: Path, input_kind: str, answer: str = "no_tumor", logit: float = 4.0) -> Path:
    """Tiny classifier weights that answer ``answer`` for every input (softmax of a fixed bias)."""
    kwargs = network_kwargs(input_kind, **TINY_NET)
    net = build_classification_network(**kwargs)
    with torch.no_grad():
        net.class_layers.out.weight.zero_()
        bias = torch.zeros(len(TUMOR_CLASSES))
        bias[TUMOR_CLASSES.index(answer)] = logit
        net.class_layers.out.bias.copy_(bias)
    spec = TINY_2D if input_kind == "2d" else TINY_3D
    meta = {"kind": "classification", **spec.to_meta(), "classes": list(TUMOR_CLASSES), "network": kwargs}
    save_model(net, path, meta)
    return path


def lesion_case(centres_mm: list[tuple[float, float, float]], radius_mm: float = 10.0, seed: int = 0):
    """(4, 40, 48, 40) case at 4 mm: a 136 x 168 x 120 mm brain ellipsoid, bright spheres on every sequence."""
    rng = np.random.default_rng(seed)
    shape = (40, 48, 40)
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    affine[:3, 3] = [-80.0, -96.0, -80.0]
    ijk = np.indices(shape, dtype=np.float64)
    xyz = [ijk[a] * SPACING_MM + affine[a, 3] for a in range(3)]
    brain = (xyz[0] / 68) ** 2 + (xyz[1] / 84) ** 2 + (xyz[2] / 60) ** 2 < 1.0
    lesion = np.zeros(shape, bool)
    for cx, cy, cz in centres_mm:
        lesion |= (xyz[0] - cx) ** 2 + (xyz[1] - cy) ** 2 + (xyz[2] - cz) ** 2 < radius_mm**2
    lesion &= brain
    stack = np.zeros((4, *shape), np.float32)
    for k in range(4):
        tissue = 100.0 + 10 * k + rng.normal(0, 4, shape)
        stack[k] = np.where(brain, np.where(lesion, 3.0 * (100.0 + 10 * k), tissue), 0.0)
    return stack, affine, lesion


def write_case(studies: Path, case_id: str, stack: np.ndarray, affine: np.ndarray, tumor_type: str) -> Path:
    """Write a four-sequence case into a datastore (FLAIR at the top level, the rest under cases/<id>/)."""
    folder = studies / "cases" / case_id
    folder.mkdir(parents=True, exist_ok=True)
    for key, k in zip(SEQUENCES, range(4)):
        if key != "t2f":
            save_nifti(folder / f"{key}.nii.gz", stack[k], affine, np.float32)
    (folder / "case.json").write_text(json.dumps({"kind": "3d", "tumor_type": tumor_type}), encoding="utf-8")
    return save_nifti(studies / f"{case_id}.nii.gz", stack[FLAIR], affine, np.float32)
