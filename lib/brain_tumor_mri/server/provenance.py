"""Label provenance: every saved version kept, with who saved it, when, and from which model.

MONAI Label keeps one file per label tag and case (``labels/final/<id>.nii.gz``): a second
annotator's save replaces the first without trace. This app still writes that file — it is
what training and Slicer read, the latest version is final — and also keeps every version:

```
labels/history/<tag>/<id>/v0001-<utc time>-<user>.nii.gz   each saved version (hard link: no extra disk
labels/history/<tag>/<id>/versions.json                    for the latest), and one record per version
```

A record holds the version number, who saved it (the token's user when authentication is
on, ``verified: true``; else the client id the client sent, unverified), when, the
model version of the prediction the label corrects and the file's SHA-256. The model
version is the one the server last served for that case (to the same user if it served
them one), recorded at inference time because Slicer does not send it back; failing that,
a ``model_version`` the client sent; else none (drawn from scratch, or predicted elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..hashing import file_sha256
from ..layout import atomic_write_json
from .principal import Principal, acting_principal

logger = logging.getLogger(__name__)

HISTORY = "history"  # labels/<HISTORY>/...: reserved, not a label tag
RECORDS = "versions.json"
PREDICTIONS = "predictions"  # image info key: {user: {model, model_version, at}}
MAX_PREDICTION_USERS = 32  # bound the per-case record of who was served which prediction

_predictions_lock = threading.Lock()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "_", name)[:48] or "unknown"


class LabelHistory:
    """The saved versions of one case's label under one tag."""

    def __init__(self, studies: Path, tag: str, image_id: str) -> None:
        self.dir = Path(studies) / "labels" / HISTORY / tag / image_id

    def records(self) -> list[dict[str, Any]]:
        path = self.dir / RECORDS
        if not path.is_file():
            return []
        return list(json.loads(path.read_text(encoding="utf-8")))

    def file(self, version: int) -> Path | None:
        """The label file of ``version`` (1-based), or None if there is no such version."""
        found = [r for r in self.records() if r.get("version") == version]
        return self.dir / found[0]["file"] if found else None

    def add(self, label: Path, who: Principal, model_version: str | None, source: str | None) -> dict[str, Any]:
        """Keep ``label`` (complete, not yet published) as the next version; returns its record.

        The file is hard-linked (copied where links are not possible), so the final label and
        its newest version share one copy on disk. Call with the datastore's lock held.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        records = self.records()
        version = 1 + max((int(r["version"]) for r in records), default=0)
        when = utc_now()
        stamp = when.replace("-", "").replace(":", "").replace("+0000", "Z")
        name = f"v{version:04d}-{stamp}-{_safe(who.name)}.nii.gz"
        target = self.dir / name
        target.unlink(missing_ok=True)  # a leftover of a save killed before its record was written
        try:
            os.link(label, target)
        except OSError:
            shutil.copy2(label, target)
        record = {
            "version": version,
            "file": name,
            "saved_by": who.name,
            "verified": who.verified,
            "saved_at": when,
            "model_version": model_version,
            "model_version_source": source,
            "sha256": file_sha256(target),
        }
        _write_json(self.dir / RECORDS, [*records, record])
        return record


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=1, sort_keys=False)


def corrected_prediction(image_info: dict[str, Any], who: Principal, params: dict[str, Any]) -> tuple[Any, Any]:
    """(model version, where it came from) of the prediction a label saved by ``who`` corrects."""
    served = image_info.get(PREDICTIONS) or {}
    mine = served.get(who.name)
    latest = max(served.values(), key=lambda p: str(p.get("at", "")), default=None) if served else None
    for found, source in ((mine, "served"), (latest, "served_to_another_user")):
        if isinstance(found, dict) and found.get("model_version"):
            return str(found["model_version"]), source
    if params.get("model_version"):
        return str(params["model_version"]), "client"
    return None, None


def record_prediction(datastore: Any, image_id: str, model: str, model_version: str, who: Principal) -> None:
    """Remember that ``who`` was served ``model``'s prediction for ``image_id`` (in its image info)."""
    with _predictions_lock:
        info = datastore.get_image_info(image_id) or {}
        served = dict(info.get(PREDICTIONS) or {})
        served.pop(who.name, None)
        served[who.name] = {"model": model, "model_version": model_version, "at": utc_now()}
        while len(served) > MAX_PREDICTION_USERS:
            served.pop(next(iter(served)))
        datastore.update_image_info(image_id, {PREDICTIONS: served})


def note_prediction(app: Any, request: dict[str, Any], result: Any) -> None:
    """After an inference: if it segmented a datastore case, record who got which model version.

    Called by the app's ``infer`` with MONAI Label's request (``image`` is still the case id
    the client sent) and result (``file``: the label, ``params``: the task's JSON). Uploaded
    images and answers without a label file (classification) are not cases to correct.
    Bookkeeping must never fail an inference that succeeded, so errors are logged instead.
    """
    image, model = request.get("image"), request.get("model")
    params = result.get("params") if isinstance(result, dict) else None
    if not isinstance(image, str) or not isinstance(params, dict) or not result.get("file"):
        return
    version = params.get("model_version")
    try:
        datastore = app.datastore()
        if not version or not datastore.get_image_uri(image):
            return
        record_prediction(datastore, image, str(model), str(version), acting_principal(request.get("client_id")))
    except Exception:  # logged with its traceback; the inference answer still goes out
        logger.warning("could not record the prediction served for %s", image, exc_info=True)
