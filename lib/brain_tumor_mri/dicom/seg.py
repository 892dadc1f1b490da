"""DICOM Segmentation (SEG) objects for the tumour labels, written and read with highdicom.

A SEG is built on the FLAIR series the label was drawn on (the display sequence of a case):
its frames are the FLAIR's slices, it copies the patient and study, references the FLAIR
series (Referenced Series Sequence, and per frame the source instance in the Derivation
Image Sequence), and has one segment per tumour sub-region with the codes, names and
colours of ``terminology``. All four sequences of a case share one grid and one frame of
reference (the cache refuses other cases), so viewers can overlay it on every sequence.

The segmentation type is BINARY (highdicom 0.22 writes BINARY or FRACTIONAL; LABELMAP
needs a newer highdicom that needs pydicom 3). Each segment records how it was made: a
label saved from Slicer is ``SEMIAUTOMATIC`` (a person corrected the model's answer), an
inference answer ``AUTOMATIC``; both name the algorithm and the model version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .. import __version__
from ..imageio import InputError
from ..terminology import ORDERED_TERMS, Code, cielab_dicom

MANUFACTURER = "brain-tumor-mri"
MODEL_NAME = "MONAI Label brain tumour app"
ALGORITHM_NAME = "brain-tumor-mri 3D U-Net"
#: DICOM CID 7162 (Surface Processing Algorithm Families) entry for learned models.
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


@dataclass(frozen=True)
class Provenance:
    """Who made a label: the model (name and version) and whether a person corrected it."""

    model_version: str
    corrected: bool  # True: saved from Slicer after review; False: the model's answer as is


def _code(c: Code) -> Any:
    from pydicom.sr.coding import Code as PydicomCode

    return PydicomCode(c.value, c.scheme, c.meaning)


def algorithm_identification(provenance: Provenance) -> Any:
    """highdicom Algorithm Identification (name, version = model version, family AI)."""
    import highdicom as hd

    return hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=_code(ARTIFICIAL_INTELLIGENCE),
        version=provenance.model_version[:64],
        source=f"{MANUFACTURER} {__version__}",
    )


def segment_descriptions(provenance: Provenance) -> list[Any]:
    """One highdicom SegmentDescription per tumour sub-region (segment number = label value)."""
    import highdicom as hd

    algorithm_type = (
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        if provenance.corrected
        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    algorithm = algorithm_identification(provenance)
    return [
        hd.seg.SegmentDescription(
            segment_number=term.value,
            segment_label=term.name,
            segmented_property_category=_code(term.category),
            segmented_property_type=_code(term.type),
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
            tracking_id=term.name,
            tracking_uid=generate_uid(),
        )
        for term in ORDERED_TERMS
    ]


def build_segmentation(label: np.ndarray, source: Sequence[Dataset], provenance: Provenance) -> Dataset:
    """A DICOM SEG of ``label`` (x, y, z internal values) on the FLAIR slices ``source`` (slice order).

    ``label[:, :, k]`` lies on ``source[k]``: column index along the first axis, row index
    along the second, as ``volume.series_volume`` reads them.
    """
    import highdicom as hd

    if label.ndim != 3 or label.shape[2] != len(source):
        raise InputError(f"label of shape {label.shape} does not match the {len(source)} source slices")
    frames = np.ascontiguousarray(np.transpose(np.asarray(label, dtype=np.uint8), (2, 1, 0)))
    if frames.shape[1:] != (int(source[0].Rows), int(source[0].Columns)):
        raise InputError(f"label slices {frames.shape[1:]} do not match the source rows/columns")
    kind = "corrected" if provenance.corrected else "automatic"
    seg = hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(provenance),
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="1",
        content_label="BRAIN_TUMOR",
        content_description=f"Brain tumour sub-regions ({kind}), model {provenance.model_version}"[:64],
        series_description=f"Tumour segmentation ({kind})",
        omit_empty_frames=bool(frames.any()),
    )
    for item, term in zip(seg.SegmentSequence, ORDERED_TERMS):
        item.RecommendedDisplayCIELabValue = cielab_dicom(term.color)
    return seg


def read_segmentation(seg: Dataset, source: Sequence[Dataset]) -> np.ndarray:
    """The label volume (x, y, z internal values) a SEG holds, on the slices ``source``."""
    import highdicom as hd

    parsed = hd.seg.Segmentation.from_dataset(seg, copy=True)
    uids = [str(ds.SOPInstanceUID) for ds in source]
    referenced = {str(uid) for _, _, uid in parsed.get_source_image_uids()}
    present = [u for u in uids if u in referenced]
    frames = np.zeros((len(uids), int(source[0].Rows), int(source[0].Columns)), np.uint8)
    if present:
        pixels = parsed.get_pixels_by_source_instance(
            source_sop_instance_uids=present, combine_segments=True, relabel=False, assert_missing_frames_are_empty=True
        )
        for uid, plane in zip(present, pixels):
            frames[uids.index(uid)] = plane
    return np.transpose(frames, (2, 1, 0))
