"""Turns the library's input errors into HTTP answers Slicer shows to the user."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Iterator

from fastapi import HTTPException

from ..imageio import InputError
from ..networks.store import ModelUnavailable

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def client_errors(task: str) -> Iterator[None]:
    """Map the library's user-input errors to 422 and a missing model to 503.

    Only ``InputError`` (bad input the client can fix) becomes a 4xx; any other exception
    is a server fault and propagates as one (500), so a bug is never reported to the user
    as "bad input". Messages name files by their base name only, never a server path.
    """
    try:
        yield
    except HTTPException:
        raise
    except InputError as exc:
        logger.warning("%s: rejected input: %s", task, exc)
        raise HTTPException(status_code=422, detail=f"{task}: {exc}") from exc
    except ModelUnavailable as exc:
        raise HTTPException(status_code=503, detail=f"{task}: {exc}") from exc


def checked_image_path(image: object, studies: Path) -> Path:
    """The request's image path, which must be a datastore image or an uploaded temp file.

    MONAI Label replaces a known id by its file path and passes unknown ids through, and it
    accepts any existing path; only files inside the studies folder or the upload temp dir
    are served, so an id like ``../x`` or ``/etc/passwd`` cannot read other files.
    """
    if not image or not isinstance(image, str):
        raise HTTPException(status_code=404, detail="image not found in the datastore")
    path = Path(image)
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"image {path.name!r} not found in the datastore")
    real = path.resolve()
    roots = (Path(studies).resolve(), Path(tempfile.gettempdir()).resolve())
    if not any(real.is_relative_to(r) for r in roots):
        raise HTTPException(status_code=422, detail=f"image {image!r} is outside the datastore")
    return real
