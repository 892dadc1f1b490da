"""MONAI Label datastore over a PACS (DICOMweb), one case per four-sequence MR study.

``--studies http(s)://HOST/dicom-web`` makes the app serve a PACS. The datastore is the
app's local datastore (``BrainTumorDatastore``) on a cache folder laid out like any studies
folder, so inference, training, scoring and the strategies run unchanged on cached cases;
this class adds the PACS around it:

* **listing**: the PACS's MR studies (QIDO-RS, refreshed every ``pacs_refresh_s``) are the
  cases, cached or not; ids are Study Instance UIDs;
* **fetching**: ``get_image_uri`` of an uncached study fetches, recognises and converts its
  four series once (``dicom.cache``) and registers the FLAIR as the case's image;
* **saving**: a final label of a PACS case is checked as for a folder, then a DICOM SEG and
  a TID 1500 volume report are built and stored on the PACS (STOW-RS, one request) *before*
  the label is kept locally; if the PACS refuses or is down, nothing is kept and the client
  gets the error.

Errors map to HTTP answers naming the study and series: a study that cannot be a case
(missing or duplicate sequence, non-MR series, other grids, unreadable instances) is a 422,
a study the PACS does not have a 404, a PACS that is down, slow or refuses the credentials
a 503. Other studies keep working; a PACS that is down at start leaves the cached cases
served. Credentials come only from the environment (``MONAI_LABEL_DICOMWEB_USERNAME`` /
``MONAI_LABEL_DICOMWEB_PASSWORD``, or MONAI Label's newer ``MONAI_LABEL_DATASTORE_*``).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import DataModel, ImageLabelModel
from monailabel.interfaces.datastore import DefaultLabelTag

from ..config import AppConfig
from ..dicom.cache import NIFTI, RemoteStudy, StudyCache
from ..dicom.client import PacsClient, PacsNotFound, PacsRejected, PacsSettings, PacsUnavailable
from ..dicom.derived import derived_objects
from ..dicom.seg import Provenance
from ..dicom.sequences import parse_sequence_map
from ..imageio import InputError
from ..layout import SEG_WEIGHTS, published_dir
from .compat import has_attrs, requires
from .datastore import BrainTumorDatastore

logger = logging.getLogger(__name__)

requires(
    "monailabel.datastore.local.ImageLabelModel (a pydantic model taking image=DataModel)",
    "server.dicomweb_datastore (registering fetched PACS studies)",
    has_attrs("monailabel.datastore.local", "ImageLabelModel", "model_fields"),
)


@contextlib.contextmanager
def pacs_errors(what: str) -> Iterator[None]:
    """Library errors of a PACS operation -> HTTP answers (422 / 404 / 503) naming ``what``."""
    try:
        yield
    except HTTPException:
        raise
    except InputError as exc:
        logger.warning("%s: refused: %s", what, exc)
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except PacsNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except (PacsUnavailable, PacsRejected) as exc:
        logger.warning("%s: PACS problem: %s", what, exc)
        raise HTTPException(status_code=503, detail=str(exc)) from exc


def served_model_version(cfg: AppConfig) -> str:
    """Version of the segmentation weights that serve now (from the sidecar; no model load)."""
    import torch

    from ..networks.store import ModelStore
    from .scoring import served_version

    store = ModelStore(
        "segmentation", published_dir(cfg.studies) / SEG_WEIGHTS, cfg.weights_dir / SEG_WEIGHTS, torch.device("cpu")
    )
    return served_version(store) or "unknown"


def pacs_settings(cfg: AppConfig) -> PacsSettings:
    """Where the PACS is (``--studies``) and the credentials from MONAI Label's settings/environment."""
    from monailabel.config import settings

    assert cfg.pacs_url is not None
    user = settings.MONAI_LABEL_DICOMWEB_USERNAME or settings.MONAI_LABEL_DATASTORE_USERNAME
    password = settings.MONAI_LABEL_DICOMWEB_PASSWORD or settings.MONAI_LABEL_DATASTORE_PASSWORD
    return PacsSettings(cfg.pacs_url, user, password, timeout_s=cfg.pacs_timeout)


class PacsDatastore(BrainTumorDatastore):
    """The app's local datastore on the PACS cache, listing and fetching PACS studies."""

    def __init__(self, cfg: AppConfig, cache: StudyCache, **kwargs: Any) -> None:
        self.cfg = cfg
        self.cache = cache
        self._remote: dict[str, RemoteStudy] = {}
        self._listed_at = float("-inf")
        self._pacs_error: str | None = None
        self._rejected: dict[str, str] = {}  # study -> why it cannot be a case (until it fetches)
        self._refreshing = threading.Lock()
        super().__init__(str(cfg.studies), **kwargs)
        self.refresh_remote(force=True)

    # -- the PACS's study list ---------------------------------------------------------
    def refresh_remote(self, force: bool = False) -> None:
        """Re-list the PACS's studies: now if ``force``, else in the background once the list is stale.

        ``/info`` reads the list on MONAI Label's event loop, so a slow PACS must never be
        waited for there: callers get the current list while a background thread refreshes it.
        """
        if force:
            with self._refreshing:
                self._list_now()
            return
        if time.monotonic() - self._listed_at < self.cfg.pacs_refresh_s or not self._refreshing.acquire(blocking=False):
            return

        def run() -> None:
            try:
                self._list_now()
            finally:
                self._refreshing.release()

        threading.Thread(target=run, name="pacs-study-list", daemon=True).start()

    def _list_now(self) -> None:
        try:
            self._remote = {s.uid: s for s in self.cache.list_studies()}
            self._pacs_error = None
        except PacsUnavailable as exc:
            self._pacs_error = str(exc)
            logger.warning("PACS study list not refreshed (serving %d known studies): %s", len(self._remote), exc)
        finally:
            self._listed_at = time.monotonic()

    def is_cached(self, image_id: str) -> bool:
        """Whether a case can be used without asking the PACS (scoring skips the others)."""
        return image_id in self._datastore.objects

    def list_images(self) -> list[str]:
        self.refresh_remote()
        return sorted(set(super().list_images()) | set(self._remote))

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Unlabelled cases, without the studies that failed to become one (so Next Sample skips them)."""
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [i for i in self.list_images() if i not in labelled and i not in self._rejected]

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        if image_id in self._datastore.objects:
            return super().get_image_info(image_id)
        remote = self._remote.get(image_id)
        if remote is None:
            return {}
        return {"name": f"{image_id}{NIFTI}", "cached": False, "pacs": remote.info()}

    # -- fetching ------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        if image_id in self._datastore.objects:
            return super().get_image_uri(image_id)
        if image_id not in self._remote:
            self.refresh_remote(force=True)  # perhaps a study that arrived since the last listing
        if image_id not in self._remote:
            if self._pacs_error:
                raise HTTPException(status_code=503, detail=f"study {image_id}: {self._pacs_error}")
            return ""  # unknown id: MONAI Label and the infer task answer 404
        try:
            with pacs_errors(f"study {image_id}"):
                self.cache.fetch(image_id)
        except HTTPException as exc:
            if exc.status_code == 422:
                self._rejected[image_id] = str(exc.detail)
            raise
        self._rejected.pop(image_id, None)
        self._register(image_id)
        return super().get_image_uri(image_id)

    def prepare_case(self, image_id: str) -> bool:
        """Fetch a case before Next Sample serves it; False for a study that cannot be a case."""
        try:
            return bool(self.get_image_uri(image_id))
        except HTTPException as exc:
            if exc.status_code in (404, 422):
                return False
            raise

    def _register(self, image_id: str) -> None:
        """Add a freshly cached study to the datastore's records (as the file watcher would)."""
        with self._changing():  # the latest datastore file, held until written
            if image_id not in self._datastore.objects:
                remote = self._remote.get(image_id)
                info = {
                    "ts": int(time.time()),
                    "name": f"{image_id}{NIFTI}",
                    **({"pacs": remote.info()} if remote else {}),
                }
                self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=NIFTI))
                self._update_datastore_file(lock=False)

    # -- saving ----------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if image_id not in self._datastore.objects and image_id in self._remote:
            self.get_image_uri(image_id)  # a label for a listed study: fetch the study first
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def before_store_label(self, image_id: str, label_tag: str, label: tuple) -> dict[str, Any]:
        """Store the SEG and volume report of a final label on the PACS; what to keep locally."""
        source = self.cache.source_headers(image_id)
        if label_tag != DefaultLabelTag.FINAL.value or not source:
            return {}
        data, affine = label
        what = f"study {image_id}"
        with pacs_errors(what):
            objects = derived_objects(
                source, data, affine, Provenance(served_model_version(self.cfg), corrected=True), name=what
            )
            self.cache.client.store(objects.instances(), f"{what}: SEG and volume report")
        assert objects.sr is not None
        return {
            "pacs": {
                "seg_series_uid": str(objects.seg.SeriesInstanceUID),
                "seg_sop_instance_uid": str(objects.seg.SOPInstanceUID),
                "sr_sop_instance_uid": str(objects.sr.SOPInstanceUID),
                "volumes_ml": objects.volumes_ml,
                "stored": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        }

    # -- what MONAI Label reports ------------------------------------------------------------
    def json(self) -> dict[str, Any]:
        out = super().json()
        objects = out.setdefault("objects", {})
        for uid in self.list_images():
            if uid not in objects:
                objects[uid] = {"image": {"ext": NIFTI, "info": self.get_image_info(uid)}, "labels": {}}
        return out

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["pacs"] = {
            "host": self.cache.client.settings.host,
            "studies": len(self._remote),
            "cached": len(self._datastore.objects),
            "error": self._pacs_error,
            "rejected": dict(self._rejected),
        }
        return out


def build_pacs_datastore(cfg: AppConfig, **datastore_kwargs: Any) -> Any:
    """The PACS datastore for ``cfg`` (``cfg.pacs_url`` set, ``cfg.studies`` its cache)."""
    client = PacsClient(pacs_settings(cfg))
    cache = StudyCache(
        cfg.studies,
        client,
        overrides=parse_sequence_map(cfg.dicom_sequence_map),
        max_voxels=cfg.max_voxels,
        query=cfg.qido_filters(),
        limit=cfg.pacs_max_studies,
    )
    for noisy in ("highdicom", "dicomweb_client"):  # an INFO line per DICOM module copied / request made
        logging.getLogger(noisy).setLevel(logging.WARNING)
    removed = cache.clean_staging()
    if removed:
        logger.warning("removed %d unfinished PACS fetch(es) from the cache", removed)
    logger.info("PACS datastore: %s (cache %s)", client.settings.host, cfg.studies)
    return PacsDatastore(cfg, cache, **datastore_kwargs)
