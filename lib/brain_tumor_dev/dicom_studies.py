"""Write generated four-sequence cases as DICOM MR studies, the way a scanner would store them.

Tests and the PACS benchmark put these studies into a real Orthanc. Each sequence becomes
one MR Image Storage series (one instance per slice) with the attributes a hospital PACS
holds: patient / study / series identity, a shared frame of reference, slice geometry
(``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``), the scanner's
series description and protocol name, sequence parameters (TR / TE / TI, scanning
sequence) and, for the post-contrast T1, ``ContrastBolusAgent``. ``SeriesSpec`` lets a test
change any of them (another modality, another grid, a second candidate series, a broken
instance) to build the bad studies the server must refuse.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: UID prefix for everything this tool writes (pydicom's, followed by random digits).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class SeriesSpec:
    """How one sequence is stored: what the scanner writes into its headers."""

    description: str
    protocol: str
    scanning_sequence: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None
    contrast_agent: str | None = None
    modality: str = "MR"
    slope: float = 1.0  # RescaleSlope (stored = (value - intercept) / slope)
    intercept: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # any other header attribute, by keyword


#: A typical clinical brain-tumour protocol (Siemens-like names), one spec per sequence key.
DEFAULT_SPECS: dict[str, SeriesSpec] = {
    "t1n": SeriesSpec("AX T1 SE", "t1_se_tra", "SE", 550.0, 11.0),
    "t1c": SeriesSpec("AX T1 SE POST GD", "t1_se_tra_post", "SE", 550.0, 11.0, contrast_agent="Gadobutrol"),
    "t2w": SeriesSpec("AX T2 TSE", "t2_tse_tra", "SE", 5000.0, 95.0, slope=0.5, intercept=-10.0),
    "t2f": SeriesSpec("AX T2 FLAIR", "t2_tirm_tra_dark-fluid", "SE\\IR", 9000.0, 85.0, ti_ms=2500.0),
}


@dataclass
class WrittenStudy:
    """What ``write_study`` produced: UIDs per series label and the instance files."""

    study_uid: str
    series_uids: dict[str, str]
    files: dict[str, list[Path]]

    def all_files(self) -> list[Path]:
        return [p for paths in self.files.values() for p in paths]


def _patient_module(ds: Dataset, patient_id: str) -> None:
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"


def _study_module(ds: Dataset, study_uid: str, accession: str) -> None:
    today = datetime.date(2024, 1, 15)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = today.strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyID = accession[-8:]
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MRI BRAIN WITH AND WITHOUT CONTRAST"


def _geometry(affine_ras: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
    """(ImageOrientationPatient, PixelSpacing, LPS affine) for slices ``vol[:, :, k]``.

    Column index ``c`` of a slice's pixel array runs along volume axis 0 and row index ``r``
    along axis 1, so the pixel array of slice ``k`` is ``vol[:, :, k].T``.
    """
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    col_step, row_step = lps[:3, 0], lps[:3, 1]  # moving one column / one row
    iop = [*(col_step / np.linalg.norm(col_step)), *(row_step / np.linalg.norm(row_step))]
    spacing = [float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))]  # [between rows, between columns]
    return [round(float(v), 8) for v in iop], spacing, lps


def series_datasets(
    volume: np.ndarray,
    affine_ras: np.ndarray,
    spec: SeriesSpec,
    *,
    study: Dataset,
    series_uid: str,
    series_number: int,
    frame_uid: str,
) -> list[Dataset]:
    """One MR Image Storage dataset per slice of ``volume`` (x, y, z) on ``affine_ras``."""
    iop, spacing, lps = _geometry(affine_ras)
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    stored = np.rint((np.asarray(volume, np.float64) - spec.intercept) / spec.slope)
    if stored.min() >= -32768 and stored.max() <= 32767:
        stored, signed = stored.astype(np.int16), 1
    elif stored.min() >= 0 and stored.max() <= 65535:
        stored, signed = stored.astype(np.uint16), 0  # as many scanners store MR magnitude
    else:
        raise ValueError(f"{spec.description}: values do not fit 16 bits with slope {spec.slope}")
    out = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.update(study)
        ds.SOPClassUID = MR_IMAGE_STORAGE if spec.modality == "MR" else CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid(prefix=UID_PREFIX)
        ds.Modality = spec.modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = spec.description
        ds.ProtocolName = spec.protocol
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "brain-tumor-mri synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = spec.scanning_sequence
        ds.SequenceVariant = "SK\\SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = spec.tr_ms
        ds.EchoTime = spec.te_ms
        if spec.ti_ms is not None:
            ds.InversionTime = spec.ti_ms
        ds.MagneticFieldStrength = 3.0
        if spec.contrast_agent:
            ds.ContrastBolusAgent = spec.contrast_agent
        position = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [round(float(v), 6) for v in position[:3]]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = spacing
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.SliceLocation = round(float(np.dot(position[:3], normal)), 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, signed
        ds.RescaleSlope, ds.RescaleIntercept = spec.slope, spec.intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        for keyword, value in spec.extra.items():
            setattr(ds, keyword, value)
        out.append(ds)
    return out


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), write_like_original=False)
    return path


def write_study(
    volumes: dict[str, np.ndarray],
    affine_ras: np.ndarray,
    out_dir: Path,
    *,
    patient_id: str,
    specs: dict[str, SeriesSpec] | None = None,
    affines: dict[str, np.ndarray] | None = None,
    study_uid: str | None = None,
) -> WrittenStudy:
    """Write one study: a series per entry of ``volumes`` (keyed by a series label).

    ``specs`` maps each label to its ``SeriesSpec`` (default: ``DEFAULT_SPECS`` by sequence
    key); ``affines`` gives a series its own grid. All series share one frame of reference,
    as the sequences of one MRI session do.
    """
    specs = {**DEFAULT_SPECS, **(specs or {})}
    study_uid = study_uid or generate_uid(prefix=UID_PREFIX)
    study = Dataset()
    _patient_module(study, patient_id)
    _study_module(study, study_uid, accession="ACC" + hashlib.sha256(study_uid.encode()).hexdigest()[:10].upper())
    frame_uid = generate_uid(prefix=UID_PREFIX)
    written = WrittenStudy(study_uid, {}, {})
    for number, (label, volume) in enumerate(volumes.items(), start=1):
        series_uid = generate_uid(prefix=UID_PREFIX)
        datasets = series_datasets(
            volume,
            (affines or {}).get(label, affine_ras),
            specs[label],
            study=study,
            series_uid=series_uid,
            series_number=number,
            frame_uid=frame_uid,
        )
        written.series_uids[label] = series_uid
        written.files[label] = [save_dataset(ds, out_dir / label / f"{i:04d}.dcm") for i, ds in enumerate(datasets)]
    return written


def as_standard_axial(volume: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image with its first two axes reversed, so an RAS-ordered volume is stored the way
    scanners store axial slices (rows running posterior, columns running left: IOP 1,0,0,0,1,0)."""
    nx, ny = volume.shape[:2]
    flip = np.array([[-1.0, 0, 0, nx - 1], [0, -1.0, 0, ny - 1], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    return np.ascontiguousarray(volume[::-1, ::-1]), affine_ras @ flip


def spec_for(key: str, **changes: Any) -> SeriesSpec:
    """The default spec of sequence ``key`` with some fields changed."""
    return replace(DEFAULT_SPECS[key], **changes)


#: Studies the server must refuse, by the fault each has (see ``write_case_study``).
BAD_VARIANTS = ("missing_sequence", "two_flair", "flair_not_mr", "other_grid", "unreadable_instance")


def write_case_study(
    sequences: dict[str, np.ndarray], affine_ras: np.ndarray, out_dir: Path, patient_id: str, variant: str = "good"
) -> WrittenStudy:
    """A four-sequence case as a DICOM study, well formed (``good``) or with one fault.

    ``missing_sequence`` has no T2; ``two_flair`` a second FLAIR series; ``flair_not_mr`` its
    FLAIR stored as CT; ``other_grid`` a T1c with half the slices at twice the spacing;
    ``unreadable_instance`` one T2 instance whose pixel data is cut in half; ``ct_only`` a
    single CT series (a study that is not an MR study at all).
    """
    axial = {k: as_standard_axial(v, affine_ras) for k, v in sequences.items()}
    affine = next(iter(axial.values()))[1]
    volumes = {k: v for k, (v, _) in axial.items()}
    specs: dict[str, SeriesSpec] = {}
    affines: dict[str, np.ndarray] = {}
    if variant == "missing_sequence":
        volumes.pop("t2w")
    elif variant == "two_flair":
        volumes["t2f_repeat"] = volumes["t2f"]
        specs["t2f_repeat"] = spec_for("t2f", description="AX T2 FLAIR REPEAT")
    elif variant == "flair_not_mr":
        specs["t2f"] = spec_for("t2f", modality="CT")
    elif variant == "other_grid":
        volumes["t1c"] = np.ascontiguousarray(volumes["t1c"][:, :, ::2])
        affines["t1c"] = affine @ np.diag([1.0, 1.0, 2.0, 1.0])
    elif variant == "ct_only":
        volumes = {"ct": volumes["t1n"]}
        specs["ct"] = spec_for("t1n", description="CT HEAD", protocol="ct_head", modality="CT")
    elif variant not in ("good", "unreadable_instance"):
        raise ValueError(f"unknown study variant {variant!r}")
    written = write_study(volumes, affine, out_dir, patient_id=patient_id, specs=specs, affines=affines)
    if variant == "unreadable_instance":
        import pydicom

        path = written.files["t2w"][len(written.files["t2w"]) // 2]
        ds = pydicom.dcmread(str(path))
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(str(path), write_like_original=False)
    return written


def read_brats_case(folder: Path, step: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(sequences by key, seg, RAS affine) of a BraTS-2023-layout case folder, every ``step``-th voxel."""
    from brain_tumor_mri.imageio import open_nifti
    from brain_tumor_mri.labels import SEQUENCES

    folder = Path(folder)

    def load(suffix: str) -> tuple[np.ndarray, np.ndarray]:
        img = open_nifti(folder / f"{folder.name}-{suffix}.nii.gz")
        return np.asarray(img.dataobj)[::step, ::step, ::step], np.asarray(img.affine)

    sequences = {key: load(key)[0].astype(np.float32) for key in SEQUENCES}
    seg, affine = load("seg")
    return sequences, seg.astype(np.uint8), affine @ np.diag([step, step, step, 1.0])
