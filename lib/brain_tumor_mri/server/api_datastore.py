"""Validating twins of MONAI Label's datastore endpoints (images, labels, their info, the archive).

Each endpoint checks what it receives (ids, JSON fields, file types, existence) and then
calls MONAI Label's own function for the work, so behaviour for valid requests is
unchanged. The checks run before MONAI Label copies an upload into a temp file, so a
request refused here leaves no file behind. Role dependencies are MONAI Label's own.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints import datastore as ml
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from ..layout import IMAGE_EXTS_2D, IMAGE_EXTS_3D, case_dir, split_image_name
from . import validation as v
from .compat import has_params, requires
from .handlers import monailabel_errors
from .route_table import Route, register_routes

logger = logging.getLogger(__name__)

ROUTES = [
    ("PUT", "/datastore/image"),
    ("PUT", "/datastore/"),
    ("DELETE", "/datastore/image"),
    ("DELETE", "/datastore/"),
    ("PUT", "/datastore/image/info"),
    ("PUT", "/datastore/label"),
    ("DELETE", "/datastore/label"),
    ("PUT", "/datastore/label/info"),
    ("PUT", "/datastore/updatelabelinfo"),
    ("GET", "/datastore/dataset"),
]
register_routes("server.api_datastore", ROUTES)
_ML = "monailabel.endpoints.datastore"
for _fn, *_params in (
    ("add_image", "background_tasks", "image", "params", "file", "user"),
    ("remove_image", "id", "user"),
    ("save_label", "background_tasks", "image", "params", "tag", "label", "user"),
    ("remove_label", "id", "tag", "user"),
    ("update_image_info", "image", "info", "user"),
    ("update_label_info", "label", "tag", "info", "user"),
):
    requires(f"endpoint {_ML}.{_fn}({', '.join(_params)})", "server.api_datastore", has_params(_ML, _fn, *_params))

ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
#: largest 2D picture accepted (pixels); larger ones are no head MRI slice
MAX_2D_PIXELS = 8192 * 8192


def _datastore() -> Any:
    return app_instance().datastore()


def known_image(image: str) -> str:
    """A valid image id the datastore holds (422 for a malformed id, 404 for an unknown one)."""
    v.case_id("image id", image)
    if not _datastore().get_image_uri(image):
        raise v.not_found(f"image {image!r} not found in the datastore")
    return image


def known_label(label: str, tag: str) -> str:
    """The label of image ``label`` under ``tag``; 404 when there is none."""
    v.case_id("label id", label)
    v.case_id("label tag", tag)
    if not _datastore().get_label_uri(label, tag):
        raise v.not_found(f"no {tag!r} label for image {label!r} in the datastore")
    return label


def check_2d_picture(file: UploadFile) -> None:
    """A 2D upload must be a readable picture of sane size (checked in memory, then rewound)."""
    from PIL import Image

    try:
        with Image.open(file.file) as img:
            width, height = img.size
            if width * height > MAX_2D_PIXELS:
                raise v.unprocessable(f"file: {width}x{height} pixels, more than the {MAX_2D_PIXELS:,} accepted")
            img.verify()
    except HTTPException:
        raise
    except Exception as exc:  # PIL raises many types for undecodable data; all mean "not a picture"
        raise v.unprocessable(f"file: cannot read picture {os.path.basename(file.filename or '')!r} "
                              f"({type(exc).__name__})") from None  # fmt: skip
    finally:
        file.file.seek(0)


def add_image(
    background_tasks: BackgroundTasks,
    image: str | None = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
    user: User = Depends(RBAC(ANNOTATOR)),
) -> Any:
    """Add a 3D case image or a 2D picture under a new id (409 if the id is taken)."""
    v.json_object("params", params)
    ext = v.upload_extension("file", file.filename)
    image_id = image if image else split_image_name(os.path.basename(file.filename or ""))[0]
    v.case_id("image id", image_id)
    if _datastore().get_image_uri(image_id):
        raise HTTPException(status_code=409, detail=f"image {image_id!r} already exists; delete it first")
    if ext in IMAGE_EXTS_2D:
        check_2d_picture(file)
    with monailabel_errors():
        return ml.add_image(background_tasks, image_id, params, file, user.username)


def remove_image(id: str, user: User = Depends(RBAC(ADMIN))) -> Any:
    """Remove an image, its labels and the case's other sequences."""
    known_image(id)
    studies = Path(_datastore().get_image_uri(id)).parent  # images live at the top of the studies folder
    with monailabel_errors():
        result = ml.remove_image(id, user.username)
    folder = case_dir(studies, id)
    if folder.is_dir():  # the case's other sequences: a later image with this id must not inherit them
        shutil.rmtree(folder)
    return result


def update_image_info(image: str, info: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))) -> Any:
    """Merge a JSON object into an image's info."""
    known_image(image)
    v.json_object("info", info)
    with monailabel_errors():
        return ml.update_image_info(image, info, user.username)


def save_label(
    background_tasks: BackgroundTasks,
    image: str,
    params: str = Form("{}"),
    tag: str = "final",
    label: UploadFile = File(...),
    user: User = Depends(RBAC(ANNOTATOR)),
) -> Any:
    """Save a label volume for a 3D case (content checked by the datastore)."""
    known_image(image)
    v.case_id("label tag", tag or "final")
    v.json_object("params", params)
    name = (label.filename or "").lower()
    if not name.endswith(IMAGE_EXTS_3D):
        raise v.unprocessable(f"label: file type not accepted; upload one of {', '.join(IMAGE_EXTS_3D)}")
    with monailabel_errors():
        return ml.save_label(background_tasks, image, params, tag or "final", label, user.username)


def remove_label(id: str, tag: str, user: User = Depends(RBAC(ADMIN))) -> Any:
    """Remove one label of an image."""
    known_label(id, tag)
    with monailabel_errors():
        return ml.remove_label(id, tag, user.username)


def update_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))) -> Any:
    """Merge a JSON object into a label's info."""
    known_label(label, tag)
    v.json_object("info", info)
    with monailabel_errors():
        return ml.update_label_info(label, tag, info, user.username)


def update_label_info_legacy(
    label: str, tag: str, params: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))
) -> Any:
    """MONAI Label's deprecated spelling of ``PUT /datastore/label/info`` (``params`` for ``info``)."""
    return update_label_info(label, tag, params, user)


def download_dataset(
    background_tasks: BackgroundTasks, limit_cases: int | None = None, user: User = Depends(RBAC(ANNOTATOR))
) -> Any:
    """The datastore as a ZIP archive; the temporary archive is removed once sent."""
    if limit_cases is not None and limit_cases < 1:
        raise v.unprocessable(f"limit_cases: {limit_cases} must be at least 1")
    datastore = _datastore()
    if not datastore.datalist():
        raise v.not_found("no labelled case in the datastore to archive")
    path = datastore.get_dataset_archive(limit_cases)
    background_tasks.add_task(os.unlink, path)
    return FileResponse(path, media_type="application/zip", filename="dataset.zip")


def routes(ctx: Any) -> list[Route]:
    """The datastore routes this module re-declares."""
    checked = "validates ids, JSON fields, file type; 404/409 for unknown/taken ids"
    return [
        Route("PUT", "/datastore/image", add_image, checked),
        Route("PUT", "/datastore/", add_image, checked + " (deprecated path MONAILabelClient.upload_image uses)"),
        Route("DELETE", "/datastore/image", remove_image, checked + "; also removes the case's sequences"),
        Route("DELETE", "/datastore/", remove_image, checked + " (deprecated path)"),
        Route("PUT", "/datastore/image/info", update_image_info, checked),
        Route("PUT", "/datastore/label", save_label, checked),
        Route("DELETE", "/datastore/label", remove_label, "404 for a label that does not exist"),
        Route("PUT", "/datastore/label/info", update_label_info, checked),
        Route("PUT", "/datastore/updatelabelinfo", update_label_info_legacy, checked + " (deprecated path)"),
        Route("GET", "/datastore/dataset", download_dataset, "removes its temporary archive; 404 when empty"),
    ]


__all__ = ["ROUTES", "routes", "known_image", "known_label"]
