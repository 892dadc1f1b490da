"""Turns the library's input errors into HTTP answers Slicer shows to the user."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from fastapi import HTTPException

from ..imageio import InputError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def client_errors(task: str) -> Iterator[None]:
    """Map ``InputError``/``ValueError`` from user input to HTTP 422 with the message."""
    try:
        yield
    except HTTPException:
        raise
    except (InputError, ValueError) as exc:
        logger.warning("%s: rejected input: %s", task, exc)
        raise HTTPException(status_code=422, detail=f"{task}: {exc}") from exc
    except FileNotFoundError as exc:
        raise HTTPException(status_code=404, detail=f"{task}: {exc}") from exc
