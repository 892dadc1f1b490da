"""A local cache of PACS studies, laid out exactly like a local datastore (see ``layout``).

A study becomes a case whose id is its Study Instance UID (digits and dots, a valid case
id). Fetching it, once, runs:

1. QIDO-RS: the study's series; WADO-RS metadata: every MR series' instance headers;
2. ``sequences.assign_sequences``: one series each for T1, T1c, T2, FLAIR (or a 4xx);
3. geometry from the headers alone: each series a clean 3D grid, all four on the FLAIR's
   grid (the rule of the NIfTI importer: no resampling, co-registered or refused);
4. WADO-RS: the pixel data of the four series, converted (``volume.series_volume``);
5. the case written into a staging folder, then moved into place: first
   ``cases/<uid>/`` (t1n, t1c, t2w, ``case.json``, the FLAIR headers for SEG/SR), last the
   FLAIR ``<uid>.nii.gz``. The FLAIR is what marks a case as cached, so a fetch that fails
   or is killed at any point leaves no case behind, only a staging folder that the next
   start removes.

One file lock per study serialises concurrent fetches of the same study (server threads and
the scoring or training subprocesses); different studies fetch independently.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ..imageio import InputError, check_same_geometry, save_nifti, storage_dtype
from ..labels import DISPLAY_SEQUENCE, SEQUENCE_NAMES, SEQUENCES
from ..layout import CASE_META, atomic_write_json, case_dir, validate_case_id
from .client import GEOMETRY_TAGS, PacsClient, PacsNotFound
from .sequences import SeriesInfo, StudySequences, assign_sequences
from .volume import SeriesGeometry, series_geometry, series_volume

logger = logging.getLogger(__name__)

SOURCE = "dicomweb"
DICOM_DIR = "dicom"  # cases/<uid>/dicom/t2f.json: FLAIR instance headers, slice order
STAGING_DIR = "staging"  # inside the work folder beside the cache (see ``StudyCache.work``)
LOCK_DIR = "locks"
NIFTI = ".nii.gz"


@dataclass(frozen=True)
class RemoteStudy:
    """A study the PACS lists (QIDO-RS), before anything is fetched."""

    uid: str
    patient_id: str = ""
    date: str = ""
    description: str = ""
    accession: str = ""

    @classmethod
    def from_dataset(cls, ds: Dataset) -> RemoteStudy:
        return cls(
            uid=str(ds.get("StudyInstanceUID", "")),
            patient_id=str(ds.get("PatientID", "") or ""),
            date=str(ds.get("StudyDate", "") or ""),
            description=str(ds.get("StudyDescription", "") or ""),
            accession=str(ds.get("AccessionNumber", "") or ""),
        )

    def info(self) -> dict[str, str]:
        return {"study_uid": self.uid, "study_date": self.date, "study_description": self.description}


def _headers_json(datasets: Sequence[Dataset], name: str) -> list[dict[str, Any]]:
    """DICOM JSON of the instances' headers (no pixel data, no private tags), for SEG and SR later."""
    out = []
    for ds in datasets:
        copy = Dataset()
        for element in ds:
            if element.tag != 0x7FE00010 and not element.tag.is_private:
                copy.add(element)
        try:
            out.append(copy.to_json_dict())
        except Exception as exc:  # pydicom cannot encode some malformed values as JSON
            uid = getattr(ds, "SOPInstanceUID", "?")
            raise InputError(f"{name}: instance {uid} header cannot be kept ({exc})") from exc
    return out


def read_source_headers(folder: Path, key: str = DISPLAY_SEQUENCE) -> list[Dataset]:
    """The DICOM headers (slice order) kept for series ``key`` of the case in ``folder``; [] if none."""
    path = Path(folder) / DICOM_DIR / f"{key}.json"
    if not path.is_file():
        return []
    return [Dataset.from_json(item) for item in json.loads(path.read_text(encoding="utf-8"))]


class StudyCache:
    """Lists PACS studies and materialises them as datastore cases under ``root``."""

    def __init__(
        self,
        root: Path,
        client: PacsClient,
        overrides: Sequence[tuple[str, str]] = (),
        max_voxels: int | None = None,
        query: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.client = client
        self.overrides = tuple(overrides)
        self.max_voxels = max_voxels
        self.query = dict(query or {"ModalitiesInStudy": "MR"})
        self.limit = limit
        self.root.mkdir(parents=True, exist_ok=True)
        # Staging folders and lock files live beside the cache, not in it: the datastore watches
        # its folder, and half-written cases must never appear there. Same file system, so the
        # final moves are atomic renames.
        self.work = self.root.parent / f".{self.root.name}.work"
        (self.work / STAGING_DIR).mkdir(parents=True, exist_ok=True)
        (self.work / LOCK_DIR).mkdir(parents=True, exist_ok=True)

    # -- listing ------------------------------------------------------------------------
    def list_studies(self) -> list[RemoteStudy]:
        """Studies the PACS holds that match the query (one QIDO-RS request)."""
        studies = [RemoteStudy.from_dataset(ds) for ds in self.client.search_studies(self.query, self.limit)]
        valid = []
        for s in studies:
            try:
                valid.append(RemoteStudy(**{**s.__dict__, "uid": validate_case_id(s.uid)}))
            except ValueError:
                logger.warning("PACS study with unusable Study Instance UID %r skipped", s.uid)
        return valid

    def flair_path(self, uid: str) -> Path:
        return self.root / f"{validate_case_id(uid)}{NIFTI}"

    def is_cached(self, uid: str) -> bool:
        return self.flair_path(uid).is_file()

    def source_headers(self, uid: str, key: str = DISPLAY_SEQUENCE) -> list[Dataset]:
        """Instance headers (slice order) of a cached case's series ``key``; [] if not kept."""
        return read_source_headers(case_dir(self.root, uid), key)

    # -- fetching -----------------------------------------------------------------------
    def fetch(self, uid: str) -> Path:
        """The cached FLAIR of study ``uid``, fetching and converting the study first if needed."""
        from filelock import FileLock

        validate_case_id(uid)
        if self.is_cached(uid):
            return self.flair_path(uid)
        with FileLock(str(self.work / LOCK_DIR / f"{uid}.lock")):
            if not self.is_cached(uid):  # another thread or process may have fetched it meanwhile
                self._materialise(uid)
        return self.flair_path(uid)

    def _recognise(self, uid: str) -> tuple[StudySequences, dict[str, list[Dataset]]]:
        """Choose the four series from the study's series list and MR headers."""
        infos: list[SeriesInfo] = []
        headers: dict[str, list[Dataset]] = {}
        for ds in self.client.search_series(uid):
            series_uid = str(ds.get("SeriesInstanceUID", ""))
            if str(ds.get("Modality", "")).upper() != "MR":
                infos.append(SeriesInfo.from_dataset(ds))
                continue
            meta = self.client.series_metadata(uid, series_uid, GEOMETRY_TAGS)
            if not meta:
                raise InputError(f"study {uid}: series {series_uid} has no instances")
            headers[series_uid] = meta
            infos.append(SeriesInfo.from_dataset(meta[0], len(meta)))
        chosen = assign_sequences(uid, infos, self.overrides)
        return chosen, {key: headers[s.uid] for key, s in chosen.series.items()}

    def _name(self, uid: str, chosen: StudySequences, key: str) -> str:
        return f"study {uid} {SEQUENCE_NAMES[key]} ({key}) {chosen.series[key].label()}"

    def _check_grids(self, uid: str, chosen: StudySequences, headers: dict[str, list[Dataset]]) -> SeriesGeometry:
        """Every series a clean grid, all on the FLAIR's; the voxel budget; before any download."""
        grids = {key: series_geometry(headers[key], self._name(uid, chosen, key)) for key in SEQUENCES}
        flair = grids[DISPLAY_SEQUENCE]
        total = sum(int(np.prod(g.shape)) for g in grids.values())
        if self.max_voxels is not None and total > self.max_voxels:
            raise InputError(
                f"study {uid}: {total:,} voxels in four sequences, more than the {self.max_voxels:,} accepted"
            )
        for key, grid in grids.items():
            check_same_geometry(
                self._name(uid, chosen, DISPLAY_SEQUENCE), flair.shape, flair.affine,
                self._name(uid, chosen, key), grid.shape, grid.affine,
            )  # fmt: skip
        return flair

    def _download(self, uid: str, chosen: StudySequences, flair: SeriesGeometry) -> dict[str, tuple]:
        """Pixel data of the four series as (volume, affine, instances in slice order).

        The four retrievals run concurrently (network waits overlap with decoding); the first
        failure, in sequence order, is the one reported.
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(SEQUENCES), thread_name_prefix="pacs-fetch") as pool:
            futures = {key: pool.submit(self._series, uid, chosen, key, flair) for key in SEQUENCES}
            return {key: futures[key].result() for key in SEQUENCES}

    def _series(self, uid: str, chosen: StudySequences, key: str, flair: SeriesGeometry) -> tuple:
        name = self._name(uid, chosen, key)
        try:
            instances = self.client.retrieve_series(uid, chosen.series[key].uid)
        except (PacsNotFound, OSError, RuntimeError):
            raise
        except Exception as exc:  # the PACS sent an instance pydicom cannot parse
            raise InputError(f"{name}: an instance cannot be read ({type(exc).__name__}: {exc})") from exc
        volume, affine, ordered = series_volume(instances, name)
        ref = self._name(uid, chosen, DISPLAY_SEQUENCE)
        check_same_geometry(ref, flair.shape, flair.affine, name, volume.shape, affine)
        return volume, affine, ordered

    def _stage(self, uid: str, chosen: StudySequences, volumes: dict[str, tuple], staging: Path) -> None:
        """Write the case into the staging folder, laid out like the datastore root."""
        folder = case_dir(staging, uid)
        (folder / DICOM_DIR).mkdir(parents=True)
        for key in SEQUENCES:
            volume, affine, _ = volumes[key]
            target = staging / f"{uid}{NIFTI}" if key == DISPLAY_SEQUENCE else folder / f"{key}{NIFTI}"
            save_nifti(target, volume, affine, storage_dtype(volume))
        flair_instances = volumes[DISPLAY_SEQUENCE][2]
        (folder / DICOM_DIR / f"{DISPLAY_SEQUENCE}.json").write_text(
            json.dumps(_headers_json(flair_instances, self._name(uid, chosen, DISPLAY_SEQUENCE))), encoding="utf-8"
        )
        first = flair_instances[0]
        meta = {
            "kind": "3d",
            "tumor_type": None,
            "source": SOURCE,
            "sequences": list(SEQUENCES),
            "pacs": {
                **chosen.describe(),
                "patient_id": str(getattr(first, "PatientID", "")),
                "study_date": str(getattr(first, "StudyDate", "")),
                "frame_of_reference_uid": str(getattr(first, "FrameOfReferenceUID", "")),
                "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        atomic_write_json(folder / CASE_META, meta)

    def _commit(self, uid: str, staging: Path) -> None:
        """Move a staged case into place: its folder first, the FLAIR (the 'cached' mark) last."""
        target = case_dir(self.root, uid)
        if target.exists():  # left by an earlier attempt that never placed its FLAIR
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(case_dir(staging, uid), target)
        os.replace(staging / f"{uid}{NIFTI}", self.flair_path(uid))

    def _materialise(self, uid: str) -> None:
        chosen, headers = self._recognise(uid)
        flair = self._check_grids(uid, chosen, headers)
        volumes = self._download(uid, chosen, flair)
        staging = Path(tempfile.mkdtemp(prefix=f"{uid}-", dir=self.work / STAGING_DIR))
        try:
            self._stage(uid, chosen, volumes, staging)
            self._commit(uid, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("study %s cached: %s", uid, ", ".join(f"{k} {s.description!r}" for k, s in chosen.series.items()))

    def clean_staging(self) -> int:
        """Remove staging folders of fetches that died; returns how many.

        A folder whose study lock is held belongs to a fetch running in another process (the
        server, a scoring or training run) and is left alone.
        """
        from filelock import FileLock, Timeout

        removed = 0
        for entry in (self.work / STAGING_DIR).iterdir():
            uid = entry.name.rpartition("-")[0]
            try:
                with FileLock(str(self.work / LOCK_DIR / f"{uid}.lock"), timeout=0):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            except Timeout:
                continue
        return removed
