"""The app's datastore: MONAI Label's local datastore with checked, crash-safe, traceable writes.

Labels arriving from Slicer are validated (id, readability, geometry against the case's
image, values and segment names) and converted to the internal convention before they
are stored; files and the datastore's JSON are written via temp file + rename, so a
server killed mid-save never leaves a truncated label registered as final. Every saved
version is kept with who saved it, when and from which model (``provenance``); the label
info's ``provenance`` names the final one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel

from ..imageio import InputError, check_same_geometry, load_volume, save_label
from ..labels import SEG_LABELS, seg_label_value
from ..layout import IMAGE_EXTS_3D, atomic_write_json, validate_case_id
from .principal import acting_principal
from .provenance import HISTORY, RECORDS, LabelHistory, corrected_prediction

logger = logging.getLogger(__name__)


def remap_by_segment_names(label: np.ndarray, label_info: Any, source: str) -> np.ndarray:
    """Map Slicer's segment values to internal ones using ``label_info`` [{name, idx}]."""
    values = sorted(int(v) for v in np.unique(label))
    mapping = {0: 0, **{v: v for v in SEG_LABELS.values()}}
    for entry in label_info or []:
        name, idx = str(entry.get("name", "")), entry.get("idx")
        if idx is None:
            continue
        value = seg_label_value(name)  # internal keys and display names ("Enhancing tumour")
        if value is not None:
            mapping[int(idx)] = value
        elif int(idx) in values:
            raise InputError(f"{source}: segment {name!r} (value {idx}) is not one of {sorted(SEG_LABELS)}")
    unknown = [v for v in values if v not in mapping]
    if unknown:
        raise InputError(f"{source}: unknown label values {unknown}; allowed 0..3 ({', '.join(SEG_LABELS)})")
    lut = np.zeros(max(max(mapping), max(values)) + 1, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label.astype(np.int64)]


class BrainTumorDatastore(LocalDatastore):
    """LocalDatastore whose label/image writes are validated and atomic.

    Several processes open the same datastore (the server, MONAI Label's training and scoring
    subprocesses), and each keeps the datastore file in memory. MONAI Label's reconcile (run
    when a process opens the datastore, and on refresh) reads the file, lists the folders and
    writes the file back, taking the lock for each step on its own: a label the server saved
    between that read and that write was overwritten by the stale copy, its registration and
    provenance lost (seen once under the soak test's load; reproduced in
    ``tests/unit/server/test_datastore.py``). The same held for every other change written
    from a stale in-memory copy: a scoring process's ``update_image_info``, an image upload,
    a label-info edit. Here every change (``_changing``) holds the datastore's file lock from
    reloading the file to writing it, so changes from all processes serialise and each builds
    on the last, and a reload notices every replaced file (``_file_signature``), not only a
    newer timestamp.
    """

    #: largest accepted upload (voxels); set from ``AppConfig.max_voxels`` by the app
    max_voxels: int | None = None
    #: per thread: whether this thread holds the file lock (FileLock objects do not nest across instances)
    _held = threading.local()
    _config_ts: float  # the datastore file's mtime when last read or written (LocalDatastore's own marker)
    _config_signature: tuple[int, int, int] | None = None  # ``_file_signature`` when last read or written

    def _holding_lock(self) -> bool:
        return getattr(self._held, "path", None) == self._lock_file

    def _file_signature(self) -> tuple[int, int, int] | None:
        """(mtime ns, inode, size) of the datastore file: every write renames a new file into place,
        so the inode changes even when two writes land within one coarse timestamp tick."""
        try:
            st = os.stat(self._datastore_config_path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        """Reload the datastore file when another process (or this one) replaced it; under the lock."""
        if not self._holding_lock():
            with self._locked():
                self._init_from_datastore_file(throw_exception)
            return
        signature = self._file_signature()
        if signature is None or signature == self._config_signature:
            return
        try:
            with open(self._datastore_config_path, encoding="utf-8") as fp:
                self._datastore = LocalDatastoreModel.model_validate_json(fp.read())
        except ValueError as exc:
            logger.error("failed to load the datastore file: %s", exc)
            if throw_exception:
                raise
            return
        self._datastore.base_path = self._datastore_path
        self._config_signature = signature
        self._config_ts = signature[0] / 1e9

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This datastore's file lock, marked as held by this thread while inside."""
        with FileLock(self._lock_file):
            before = getattr(self._held, "path", None)
            self._held.path = self._lock_file
            try:
                yield
            finally:
                self._held.path = before

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """The file lock, with the datastore file as it is now loaded: a change made inside builds
        on what other processes wrote, and its write lands before another process can read."""
        if self._holding_lock():
            yield
            return
        with self._locked():
            self._init_from_datastore_file()
            yield

    def _reconcile_datastore(self) -> None:
        """MONAI Label's reconcile, holding the file lock from reading the file to writing it."""
        if self._holding_lock():
            super()._reconcile_datastore()
            return
        with self._locked():
            super()._reconcile_datastore()

    def __init__(self, datastore_path: str, *args: Any, **kwargs: Any) -> None:
        self.studies_path = Path(datastore_path)
        super().__init__(datastore_path, *args, **kwargs)
        handler = getattr(self, "_handler", None)
        if handler is not None:  # atomic writes arrive as renames: reload on those too
            handler.on_moved = self._on_config_moved

    def _on_config_moved(self, event: Any) -> None:
        """Another process (training, scoring) replaced datastore_v2.json: re-read it."""
        if getattr(event, "dest_path", None) == self._datastore_config_path:
            self._init_from_datastore_file()  # reloads only when the file's mtime changed

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            validate_case_id(image_id)
            validate_case_id(label_tag)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"save label: {exc}") from exc
        if label_tag == HISTORY:
            raise HTTPException(status_code=422, detail=f"save label: tag {HISTORY!r} is reserved for label versions")
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise HTTPException(status_code=404, detail=f"save label: image {image_id!r} not found in the datastore")
        image_path = Path(self.get_image_uri(image_id))
        if not image_path.name.lower().endswith(IMAGE_EXTS_3D):
            raise HTTPException(
                status_code=422, detail=f"save label: {image_id!r} is a 2D image; labels are for 3D cases"
            )
        try:
            label = self._checked_label(Path(label_filename), image_path, label_info, image_id)
        except (InputError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=f"save label: {exc}") from exc
        extra = self.before_store_label(image_id, label_tag, label)  # e.g. the PACS copy (dicomweb_datastore)
        return self._store_label(image_id, label_tag, label, {**(label_info or {}), **extra})

    def before_store_label(self, image_id: str, label_tag: str, label: tuple) -> dict[str, Any]:
        """Hook run on a checked label (data, affine) before it is stored; returns info to keep with it."""
        return {}

    def _checked_label(self, label_file: Path, image_path: Path, label_info: Any, image_id: str) -> tuple:
        if not label_file.is_file() or label_file.stat().st_size == 0:
            raise InputError(f"label for {image_id!r} is an empty file")
        data, affine = load_volume(label_file, ndim=3, max_voxels=self.max_voxels)
        img_data, img_affine = load_volume(image_path, ndim=3)
        check_same_geometry(
            f"image {image_id}", img_data.shape, img_affine, f"label for {image_id}", data.shape, affine
        )
        if np.any(np.abs(data - np.rint(data)) > 1e-3):
            raise InputError(f"label for {image_id!r} has non-integer values")
        mapped = remap_by_segment_names(np.rint(data), (label_info or {}).get("label_info"), f"label for {image_id!r}")
        return mapped, img_affine

    def _store_label(self, image_id: str, tag: str, label: tuple, label_info: dict[str, Any]) -> str:
        data, affine = label
        params = dict(label_info or {})
        who = acting_principal(params.get("client_id"))
        label_dir = Path(self._datastore.label_path(tag))
        label_dir.mkdir(parents=True, exist_ok=True)
        name = self._filename(image_id, ".nii.gz")
        fd, tmp = tempfile.mkstemp(prefix=f".{image_id}.", suffix=".partial.nii.gz", dir=label_dir)
        os.close(fd)
        try:
            save_label(tmp, data, affine)
            with open(tmp, "rb+") as fp:
                os.fsync(fp.fileno())
            with self._changing():
                for ext in IMAGE_EXTS_3D:  # a previous label in another format would shadow this one
                    old = label_dir / self._filename(image_id, ext)
                    if ext != ".nii.gz" and old.exists():
                        old.unlink()
                obj = self._datastore.objects[image_id]
                version, source = corrected_prediction(obj.image.info, who, params)
                record = LabelHistory(self.studies_path, tag, image_id).add(Path(tmp), who, version, source)
                os.replace(tmp, label_dir / name)
                info = {k: v for k, v in params.items() if k not in ("label_info", "provenance")}
                info.update({"ts": int(time.time()), "name": name, "label_info": params.get("label_info")})
                info["volumes_voxels"] = {k: int((data == v).sum()) for k, v in SEG_LABELS.items()}
                info["provenance"] = record
                obj.labels[tag] = DataModel(info=info, ext=".nii.gz")
                self._update_datastore_file(lock=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        logger.info("saved %s label for %s, version %d by %s%s (%s)", tag, image_id, record["version"], who.name,
                    "" if who.verified else " (unverified)", info["volumes_voxels"])  # fmt: skip
        return image_id

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        """MONAI Label's label info update, except the server-written provenance."""
        if "provenance" in (info or {}):
            raise HTTPException(status_code=422, detail="label info: 'provenance' is written by the server only")
        with self._changing():
            super().update_label_info(label_id, label_tag, info)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """MONAI Label's image info update (scores, served predictions), on the latest file."""
        with self._changing():
            super().update_image_info(image_id, info)

    def label_history(self, image_id: str, tag: str) -> LabelHistory:
        """The saved versions of ``image_id``'s label under ``tag`` (ids checked)."""
        validate_case_id(image_id)
        validate_case_id(tag)
        return LabelHistory(self.studies_path, tag, image_id)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            validate_case_id(image_id)
            if str(image_filename).lower().endswith(IMAGE_EXTS_3D):
                load_volume(image_filename, ndim=3, max_voxels=self.max_voxels)
        except (InputError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=f"add image: {exc}") from exc
        # MONAI Label's add_image, on the latest file (its own lock would not nest in ``_changing``)
        derived_id, ext = self._to_id(os.path.basename(image_filename))
        image_id = image_id or derived_id
        name = self._filename(image_id, ext)
        with self._changing():
            shutil.copy(image_filename, os.path.join(self._datastore.image_path(), name))
            info = {**(image_info or {}), "ts": int(time.time()), "name": name}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file(lock=False)
        logger.info("added image %s (%s)", image_id, name)
        return image_id

    def _update_datastore_file(self, lock: bool = True) -> None:
        """Write datastore_v2.json atomically (temp + rename) instead of in place."""

        def write() -> None:
            # No ``_ignore_event_config`` here: a rename delivers a "moved" event, never the
            # "modified" one that flag would swallow, so setting it would make MONAI Label
            # ignore the next genuine outside edit of the file.
            data = self._datastore.model_dump(exclude={"base_path"})
            atomic_write_json(self._datastore_config_path, data, sort_keys=False, default=str)
            self._config_signature = self._file_signature()
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock and not self._holding_lock():
            with FileLock(self._lock_file):
                write()
        else:
            write()


def clean_partial_files(studies: Path) -> int:
    """Remove temp files a killed save left behind (never registered: hidden names)."""
    removed = 0
    leftovers = [
        *Path(studies, "labels").glob("*/.*.partial.nii.gz"),
        *Path(studies, "labels", HISTORY).glob(f"*/*/.{RECORDS}.tmp*"),
    ]
    for p in leftovers:
        p.unlink(missing_ok=True)
        removed += 1
    return removed


__all__ = ["BrainTumorDatastore", "clean_partial_files", "remap_by_segment_names"]
