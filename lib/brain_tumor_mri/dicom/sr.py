"""The volume report a radiologist can file: a DICOM SR measurement report (TID 1500).

Why TID 1500 in a Comprehensive 3D SR: it is the DICOM template for image-derived
measurements, PACS and viewers (OHIF, Slicer's QuantitativeReporting, highdicom, dcmqi)
read it, and each measurement points at the SEG segment it was computed from, so the
numbers and the regions travel together. The report holds:

* one TID 1411 volumetric ROI group per segment (necrotic core, edema, enhancing tumour),
  referencing that segment of the SEG and the FLAIR series it was drawn on, with the volume
  (SNOMED CT 118565006 "Volume", UCUM ``ml``, method DCM 126030 "Sum of segmented voxel
  volumes");
* one TID 1501 group each for tumour core and whole tumour, the BraTS regions that are
  unions of segments (no single segment to reference);
* the algorithm (name, model version) on every measurement, and the report date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..terminology import ORDERED_TERMS, Code
from .seg import ALGORITHM_NAME, MANUFACTURER, SR_SERIES_NUMBER, Provenance, _code

BRAIN_MRI = Code("24590-2", "LN", "Brain MRI")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
VOLUME = Code("118565006", "SCT", "Volume")
VOXEL_SUM = Code("126030", "DCM", "Sum of segmented voxel volumes")
BRAIN = Code("12738006", "SCT", "Brain")
#: BraTS regions reported besides the segments: key in the volumes dict -> tracking name.
UNION_REGIONS = {"tumor_core": "Tumour core", "whole_tumor": "Whole tumour"}


def _measurement(volume_ml: float, provenance: Provenance) -> Any:
    import highdicom as hd

    return hd.sr.Measurement(
        name=_code(VOLUME),
        value=round(float(volume_ml), 3),
        unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
        method=_code(VOXEL_SUM),
        algorithm_id=hd.sr.AlgorithmIdentification(ALGORITHM_NAME, provenance.model_version[:64]),
    )


def _segment_groups(seg: Dataset, flair_series_uid: str, volumes: Mapping[str, float], provenance: Provenance) -> list:
    import highdicom as hd

    groups = []
    for term in ORDERED_TERMS:
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=term.name),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=term.value,
                    source_series=hd.sr.SourceSeriesForSegmentation(flair_series_uid),
                ),
                finding_type=_code(term.type),
                finding_category=_code(term.category),
                finding_sites=[hd.sr.FindingSite(_code(BRAIN))],
                measurements=[_measurement(volumes.get(term.key, 0.0), provenance)],
            )
        )
    return groups


def _union_groups(volumes: Mapping[str, float], provenance: Provenance) -> list:
    import highdicom as hd

    return [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name),
            finding_type=_code(NEOPLASM),
            finding_sites=[hd.sr.FindingSite(_code(BRAIN))],
            measurements=[_measurement(volumes.get(key, 0.0), provenance)],
        )
        for key, name in UNION_REGIONS.items()
    ]


def build_volume_report(
    seg: Dataset, source: Sequence[Dataset], volumes_ml: Mapping[str, float], provenance: Provenance
) -> Dataset:
    """A Comprehensive 3D SR (TID 1500) with the volume of every segment of ``seg`` and region."""
    import highdicom as hd

    flair_series_uid = str(source[0].SeriesInstanceUID)
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code(BRAIN_MRI),
        imaging_measurements=_segment_groups(seg, flair_series_uid, volumes_ml, provenance)
        + _union_groups(volumes_ml, provenance),
    )
    kind = "corrected" if provenance.corrected else "automatic"
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *source],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"Tumour volumes ({kind})",
        is_complete=True,
    )


def report_volumes(sr: Dataset) -> dict[str, float]:
    """Tracking identifier -> volume (mL) of every measurement group in a TID 1500 report."""
    import highdicom as hd

    parsed = hd.sr.Comprehensive3DSR.from_dataset(sr)
    report: Any = parsed.content  # a MeasurementReport for TID 1500 documents
    out: dict[str, float] = {}
    for group in report.get_volumetric_roi_measurement_groups() + report.get_image_measurement_groups():
        name = str(group.tracking_identifier)
        for m in group.get_measurements(name=_code(VOLUME)):
            out[name] = float(m.value)
    return out
