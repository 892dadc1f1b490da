"""Tiny images, datastores and random-init classification weights for the classification tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.networks.checkpoint import save_model
from brain_tumor_mri.networks.classifier import build_classification_network, network_kwargs
from brain_tumor_mri.transforms.classify_preprocess import ClassPreprocess

#: A very small DenseNet so tests run in milliseconds.
TINY_NET = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1], "bn_size": 2}
TINY_2D = ClassPreprocess("2d", 32)
TINY_3D = ClassPreprocess("3d", 16, 4.0)


def brain_slice(label: int, seed: int, size: int = 64) -> np.ndarray:
    """A bright disc ("brain") on black with a class-dependent blob, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    img = np.where((yy - c) ** 2 + (xx - c) ** 2 < (0.4 * size) ** 2, 100.0, 0.0)
    spots = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.5), None]
    if spots[label] is not None:
        sy, sx = spots[label]
        img[(yy - sy * size) ** 2 + (xx - sx * size) ** 2 < (0.08 * size) ** 2] = 220.0
    img += rng.normal(0, 5, img.shape) * (img > 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)
    return path


def save_tiny_weights(path: Path, input_kind: str, seed: int = 0) -> Path:
    """Random-init tiny classifier + sidecar, as training would publish it."""
    torch.manual_seed(seed)
    kwargs = network_kwargs(input_kind, **TINY_NET)
    spec = TINY_2D if input_kind == "2d" else TINY_3D
    meta = {"kind": "classification", **spec.to_meta(), "classes": list(TUMOR_CLASSES), "network": kwargs}
    save_model(build_classification_network(**kwargs), path, meta)
    return path


def make_2d_datastore(studies: Path, per_class: int = 3) -> Path:
    """studies/<id>.png + cases/<id>/case.json, two slices per source case."""
    studies.mkdir(parents=True, exist_ok=True)
    for label, cls in enumerate(TUMOR_CLASSES):
        for case in range(per_class):
            for n in range(2):
                case_id = f"{cls}-c{case}_{n}"
                write_png(studies / f"{case_id}.png", brain_slice(label, seed=100 * label + 10 * case + n))
                folder = studies / "cases" / case_id
                folder.mkdir(parents=True)
                (folder / "case.json").write_text(json.dumps({"kind": "2d", "tumor_type": cls}), encoding="utf-8")
    return studies
