"""Helpers for the active-learning tests: a stub datastore, tiny cases, a tiny network."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor_mri.imageio import save_nifti
from brain_tumor_mri.labels import DISPLAY_SEQUENCE, SEQUENCES

TINY_NETWORK = {"channels": [4, 8, 16, 32, 64], "strides": [2, 2, 2, 2], "num_res_units": 1, "dropout": 0.2}


def segmentation_meta(network: dict[str, Any], spacing: float) -> dict[str, Any]:
    """A complete segmentation sidecar (as training publishes it) for test weights."""
    from brain_tumor_mri.inference.segmenter import store_expectations

    return {"kind": "segmentation", "network": network, "spacing": spacing, **store_expectations()}


class StubDatastore:
    """The slice of MONAI Label's datastore API the strategies and scoring use."""

    def __init__(self, studies: Path, images: list[str], labelled: set[str]) -> None:
        self.studies = studies
        self.images = list(images)
        self.labelled = set(labelled)
        self.infos: dict[str, dict[str, Any]] = {i: {} for i in images}

    def get_unlabeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        return [i for i in self.images if i not in self.labelled]

    def get_labeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        return [i for i in self.images if i in self.labelled]

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.infos.get(image_id, {}))

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self.infos[image_id].update(copy.deepcopy(info))

    def get_image_uri(self, image_id: str) -> str:
        return str(self.studies / f"{image_id}.nii.gz")


def write_case_meta(studies: Path, case_id: str, kind: str) -> None:
    folder = studies / "cases" / case_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "case.json").write_text(json.dumps({"kind": kind}), encoding="utf-8")


def write_3d_case(studies: Path, case_id: str, seed: int, shape: tuple[int, int, int] = (40, 40, 40)) -> None:
    """A small four-sequence case: a bright ellipsoid 'brain' with a brighter blob."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    centre = rng.uniform(-0.3, 0.3, 3)[:, None, None, None]
    tumour = ((grid - centre) ** 2).sum(0) < rng.uniform(0.03, 0.08)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    write_case_meta(studies, case_id, "3d")
    for k, key in enumerate(SEQUENCES):
        vol = brain * (100.0 + 10 * k) + tumour * (40.0 + 20 * k) + brain * rng.normal(0, 5, shape)
        folder = studies / "cases" / case_id
        path = studies / f"{case_id}.nii.gz" if key == DISPLAY_SEQUENCE else folder / f"{key}.nii.gz"
        save_nifti(path, vol.astype(np.float32), affine, np.float32)
