"""Reviewer endpoints: every saved version of a label, and the file of any version.

``GET /datastore/label/history?image=<id>&tag=final`` lists the versions (who, when, model
version, SHA-256; the last one is the final label); ``GET /datastore/label/version?image=<id>
&tag=final&version=<n>`` downloads version ``n``. Reviewers and admins only (the access
gate's role table, and MONAI Label's own ``RBAC`` dependency as a second check).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, HTTPException
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC

logger = logging.getLogger(__name__)

_MARK = "_brain_tumor_history_routes"


def _history(image: str, tag: str) -> Any:
    from monailabel.interfaces.utils.app import app_instance

    datastore = app_instance().datastore()
    if not hasattr(datastore, "label_history"):
        raise HTTPException(status_code=501, detail="this datastore keeps no label versions")
    try:
        return datastore.label_history(image, tag)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"label history: {exc}") from exc


def label_history(image: str, tag: str = "final") -> dict[str, Any]:
    """All saved versions of ``image``'s label under ``tag``, oldest first; the last is final."""
    records = _history(image, tag).records()
    if not records:
        raise HTTPException(status_code=404, detail=f"no saved versions of the {tag!r} label of {image!r}")
    return {"image": image, "tag": tag, "final_version": records[-1]["version"], "versions": records}


def label_version(image: str, version: int, tag: str = "final") -> FileResponse:
    """The label file of one saved version."""
    path = _history(image, tag).file(version)
    if path is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no version {version} of the {tag!r} label of {image!r}")
    return FileResponse(str(path), media_type="application/gzip", filename=f"{image}-{tag}-v{version}.nii.gz")


def add_history_routes(app: Any) -> None:
    """Register the two reviewer routes on MONAI Label's FastAPI app (once)."""
    if getattr(app, _MARK, False):
        return
    guard = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_REVIEWER))]
    prefix = f"{settings.MONAI_LABEL_API_STR}/datastore/label"
    app.add_api_route(f"{prefix}/history", label_history, methods=["GET"], dependencies=guard, tags=["Datastore"],
                      summary="Every saved version of a label (reviewer)")  # fmt: skip
    app.add_api_route(f"{prefix}/version", label_version, methods=["GET"], dependencies=guard, tags=["Datastore"],
                      summary="Download one saved version of a label (reviewer)")  # fmt: skip
    setattr(app, _MARK, True)
