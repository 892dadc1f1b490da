"""What goes back to the PACS for a label: a DICOM SEG and the TID 1500 volume report beside it.

The label must lie on the FLAIR series it refers to; that is checked again here, from the
FLAIR's own DICOM headers, so an object never references images it does not fit. Volumes in
the report are computed from the same label (``inference.measure``), so the numbers a
radiologist reads in the PACS are the ones Slicer showed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from ..imageio import InputError, check_same_geometry
from ..inference.measure import tumor_measurements
from .seg import Provenance, build_segmentation
from .sr import build_volume_report
from .volume import series_geometry


@dataclass(frozen=True)
class DerivedObjects:
    """The SEG and (unless not asked for) the SR describing one label."""

    seg: Dataset
    sr: Dataset | None
    volumes_ml: dict[str, float]

    def instances(self) -> list[Dataset]:
        return [self.seg] + ([self.sr] if self.sr is not None else [])


def derived_objects(
    source: Sequence[Dataset],
    label: np.ndarray,
    affine: np.ndarray,
    provenance: Provenance,
    *,
    name: str,
    report: bool = True,
) -> DerivedObjects:
    """Build the SEG (and SR) of ``label`` on the FLAIR slices ``source`` (slice order)."""
    if not source:
        raise InputError(f"{name}: no DICOM source series is known (the case did not come from a PACS)")
    grid = series_geometry(source, f"{name} FLAIR series")
    if grid.order != tuple(range(len(source))):
        raise InputError(f"{name}: the stored FLAIR headers are not in slice order")
    check_same_geometry(f"{name} FLAIR series", grid.shape, grid.affine, f"label for {name}", label.shape, affine)
    label = np.asarray(label, dtype=np.uint8)
    seg = build_segmentation(label, source, provenance)
    volumes = tumor_measurements(label, affine)["volumes_ml"]
    sr = build_volume_report(seg, source, volumes, provenance) if report else None
    return DerivedObjects(seg, sr, volumes)
