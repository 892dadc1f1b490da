"""Numbers a clinician reads next to the mask: compartment volumes and tumour centroid."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..labels import REGIONS, SEG_LABELS


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in millilitres (|det| of the 3x3 affine, mm^3 / 1000)."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def tumor_measurements(label: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Volumes (mL) per compartment and BraTS region, and the whole-tumour centroid."""
    vox_ml = voxel_volume_ml(affine)
    counts = np.bincount(label.ravel(), minlength=max(SEG_LABELS.values()) + 1)
    volumes = {name: round(float(counts[v]) * vox_ml, 3) for name, v in SEG_LABELS.items()}
    for region, values in REGIONS.items():
        volumes[region] = round(float(sum(counts[v] for v in values)) * vox_ml, 3)
    centroid = None
    if volumes["whole_tumor"] > 0:
        ijk = np.argwhere(label > 0).mean(axis=0)
        ras = np.asarray(affine) @ np.append(ijk, 1.0)
        centroid = {"voxel": [round(float(v), 2) for v in ijk], "ras_mm": [round(float(v), 2) for v in ras[:3]]}
    return {"volumes_ml": volumes, "centroid": centroid, "voxel_volume_ml": vox_ml}
