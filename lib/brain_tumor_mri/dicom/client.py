"""A small DICOMweb client for one PACS: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

Built on ``dicomweb-client`` with the behaviour a server needs from a remote system:

* every request has a connect and a read timeout (a PACS that hangs must not hang us);
* no hidden retry loops: one attempt, and the caller decides;
* HTTP basic authentication when credentials are given;
* every transport failure becomes ``PacsUnavailable`` with a message naming what was being
  done (never the credentials), a missing study or series becomes ``PacsNotFound``, and
  a PACS that rejects stored instances becomes ``PacsRejected``.

Pixel data is asked for in explicit VR little endian, which every PACS can transcode to and
pydicom decodes without optional codecs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

#: QIDO-RS attributes asked for at series level (a PACS may ignore ones it does not index).
SERIES_FIELDS = ("Modality", "SeriesDescription", "SeriesNumber", "ProtocolName", "NumberOfSeriesRelatedInstances")
STUDY_FIELDS = ("StudyDate", "StudyDescription", "PatientID", "ModalitiesInStudy", "AccessionNumber")
#: What the geometry check reads from every instance (DICOM JSON tags): SOP Instance UID, Series
#: Instance UID, Instance Number, Image Position / Orientation (Patient), Samples per Pixel,
#: Number of Frames, Rows, Columns, Pixel Spacing. Parsing only these keeps a 600-instance
#: study's headers at a fraction of a second instead of seconds.
GEOMETRY_TAGS = frozenset(
    {
        "00080018",
        "0020000E",
        "00200013",
        "00200032",
        "00200037",
        "00280002",
        "00280008",
        "00280010",
        "00280011",
        "00280030",
    }
)


class PacsUnavailable(RuntimeError):
    """The PACS could not be reached, timed out, refused the credentials or failed (HTTP 5xx)."""


class PacsNotFound(LookupError):
    """The PACS does not hold the requested study or series (HTTP 404 or an empty answer)."""


class PacsRejected(RuntimeError):
    """The PACS answered a store request but did not store every instance."""


@dataclass(frozen=True)
class PacsSettings:
    """Where the PACS is and how to talk to it (never logged with the password)."""

    url: str
    username: str = ""
    password: str = ""
    timeout_s: float = 30.0  # read timeout of one request
    connect_timeout_s: float = 5.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.rpartition("@")[2]


class _TimeoutSession(requests.Session):
    """A session whose requests all get a (connect, read) timeout unless one is given."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def dataset_from_json(item: dict[str, Any], tags: frozenset[str] | None = None) -> Dataset:
    """A pydicom ``Dataset`` from DICOM JSON (only ``tags`` if given), without bulk data by reference."""
    kept = {t: v for t, v in item.items() if "BulkDataURI" not in v and (tags is None or t.upper() in tags)}
    return Dataset.from_json(kept)


class PacsClient:
    """QIDO/WADO/STOW calls with timeouts and errors that say what failed."""

    def __init__(self, settings: PacsSettings) -> None:
        from dicomweb_client import DICOMwebClient

        self.settings = settings
        session = _TimeoutSession((settings.connect_timeout_s, settings.timeout_s))
        if settings.username:
            session.auth = (settings.username, settings.password)
        self._client = DICOMwebClient(settings.url.rstrip("/"), session=session)
        self._client.set_http_retry_params(retry=False)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one request; translate transport and HTTP failures into this module's errors."""
        host = self.settings.host
        try:
            return fn(*args, **kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsUnavailable(
                    f"{what}: the PACS at {host} refused the credentials (HTTP {status}); "
                    "check MONAI_LABEL_DICOMWEB_USERNAME / MONAI_LABEL_DICOMWEB_PASSWORD"
                ) from None
            if status == 404:
                raise PacsNotFound(f"{what}: not found on the PACS at {host}") from None
            raise PacsUnavailable(f"{what}: the PACS at {host} answered HTTP {status}") from None
        except requests.Timeout:
            raise PacsUnavailable(
                f"{what}: the PACS at {host} did not answer within {self.settings.timeout_s:g} s"
            ) from None
        except requests.ConnectionError:
            raise PacsUnavailable(f"{what}: cannot connect to the PACS at {host}") from None
        except requests.RequestException as exc:
            raise PacsUnavailable(f"{what}: request to the PACS at {host} failed ({type(exc).__name__})") from None

    def search_studies(self, filters: dict[str, str], limit: int | None = None) -> list[Dataset]:
        """QIDO-RS ``/studies`` with ``filters`` (e.g. ``{"ModalitiesInStudy": "MR"}``)."""
        found = self._call(
            "searching studies",
            self._client.search_for_studies,
            search_filters=dict(filters),
            fields=list(STUDY_FIELDS),
            limit=limit,
        )
        return [dataset_from_json(item) for item in found]

    def search_series(self, study_uid: str) -> list[Dataset]:
        """QIDO-RS series of one study."""
        found = self._call(
            f"study {study_uid}: listing series",
            self._client.search_for_series,
            study_uid,
            fields=list(SERIES_FIELDS),
        )
        if not found:
            raise PacsNotFound(f"study {study_uid}: no series on the PACS at {self.settings.host}")
        return [dataset_from_json(item) for item in found]

    def series_metadata(self, study_uid: str, series_uid: str, tags: frozenset[str] | None = None) -> list[Dataset]:
        """WADO-RS metadata of every instance of a series (no pixel data).

        With ``tags``, only those attributes are kept, except on the first instance, which
        stays whole (sequence recognition reads it).
        """
        found = self._call(
            f"study {study_uid} series {series_uid}: reading headers",
            self._client.retrieve_series_metadata,
            study_uid,
            series_uid,
        )
        return [dataset_from_json(item, None if i == 0 else tags) for i, item in enumerate(found)]

    def retrieve_series(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """WADO-RS instances of a series, pixel data in explicit VR little endian."""
        return self._call(
            f"study {study_uid} series {series_uid}: retrieving instances",
            self._client.retrieve_series,
            study_uid,
            series_uid,
            media_types=(("application/dicom", EXPLICIT_VR_LITTLE_ENDIAN),),
        )

    def store(self, datasets: Sequence[Dataset], what: str) -> None:
        """STOW-RS the instances in one request; ``PacsRejected`` unless all were stored."""
        answer = self._call(f"{what}: storing", self._client.store_instances, list(datasets))
        failed = getattr(answer, "FailedSOPSequence", None) if answer is not None else None
        if failed:
            reasons = ", ".join(
                f"{getattr(item, 'ReferencedSOPInstanceUID', '?')} (reason {getattr(item, 'FailureReason', '?')})"
                for item in failed
            )
            raise PacsRejected(f"{what}: the PACS at {self.settings.host} did not store {reasons}")
        logger.info("%s: stored %d instance(s) on %s", what, len(datasets), self.settings.host)
