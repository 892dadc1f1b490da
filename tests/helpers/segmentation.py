"""Tiny labelled four-sequence datastores for the segmentation training and inference tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from brain_tumor_mri.imageio import save_label, save_nifti
from brain_tumor_mri.labels import SEQUENCES

SPACING = 3.0
#: A very small U-Net so tests run in seconds.
SMALL_NET = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def synthetic_case(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``^3 'brain' ball with a nested tumour (edema > core > necrosis) per sequence."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"))
    half = size / 2
    centre = rng.integers(int(half) - 3, int(half) + 3, size=3)[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    brain = np.sqrt(((grid - half) ** 2).sum(0)) < half - 2
    label = np.zeros((size,) * 3, np.uint8)
    label[r < 7] = 2
    label[r < 4.5] = 3
    label[r < 2.5] = 1
    label[~brain] = 0
    contrast = {"t1n": (0, 0, -20, -30), "t1c": (0, 0, 10, 60), "t2w": (0, 40, 30, 20), "t2f": (0, 50, 20, 10)}
    stack = np.zeros((4, size, size, size), np.float32)
    for c, key in enumerate(SEQUENCES):
        vol = 100 + np.take(np.array(contrast[key], np.float32), label) + rng.normal(0, 3, label.shape)
        stack[c] = np.where(brain, vol, 0)
    return stack, label


def write_case(root: Path, cid: str, seed: int, size: int = 32, kind: dict | None = None) -> None:
    """One labelled 3D case laid out as ``layout`` describes (FLAIR on top, the rest under cases/)."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    stack, label = synthetic_case(seed, size)
    folder = root / "cases" / cid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "case.json").write_text(json.dumps(kind or {"kind": "3d"}), encoding="utf-8")
    for c, key in enumerate(SEQUENCES):
        target = root / f"{cid}.nii.gz" if key == "t2f" else folder / f"{key}.nii.gz"
        save_nifti(target, stack[c], affine, np.float32)
    (root / "labels" / "final").mkdir(parents=True, exist_ok=True)
    save_label(root / "labels" / "final" / f"{cid}.nii.gz", label, affine)


def make_datastore(root: Path, n: int = 3) -> Path:
    """A datastore with ``n`` labelled 3D cases at 3 mm."""
    for i in range(n):
        write_case(root, f"case-{i:02d}", i)
    return root
