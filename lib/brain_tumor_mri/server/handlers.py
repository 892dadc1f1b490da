"""Turns MONAI Label's own "not found / invalid input" exceptions into 4xx answers.

MONAI Label raises ``ImageNotFoundException`` and ``LabelNotFoundException`` for unknown
ids and ``MONAILabelException(INVALID_INPUT)`` for requests naming a task it does not
have; FastAPI answers all of them with a bare 500. Only those are mapped here: every
other exception (a bug, a full disk, a model that fails) stays a 500, so genuine server
faults are never reported to the client as its own mistake. Messages pass through
``public_message`` so they never carry a server path.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

from .compat import has_attrs, instance_attrs, requires

logger = logging.getLogger(__name__)

requires(
    "monailabel.interfaces.exception: MONAILabelException(error, msg), ImageNotFoundException, "
    "LabelNotFoundException, MONAILabelError.INVALID_INPUT",
    "server.handlers (unknown ids and task names answer 404/422)",
    lambda: (
        has_attrs("monailabel.interfaces.exception", "MONAILabelError", "INVALID_INPUT")()
        and issubclass(ImageNotFoundException, MONAILabelException)
        and issubclass(LabelNotFoundException, MONAILabelException)
    ),
)

_ABS_PATH = re.compile(r"(?<![\w.])(?:/[^\s'\"/:;,]+)+/([^\s'\"/:;,]+)")
#: MONAI Label appends the whole request dict to some messages; it may hold server paths.
_REQUEST_DUMP = re.compile(r";\s*\{.*\}\s*$", re.S)


def public_message(text: str) -> str:
    """``text`` with any absolute path reduced to its last component, request dumps cut."""
    return _ABS_PATH.sub(r"\1", _REQUEST_DUMP.sub("", str(text))).strip()


def status_for(exc: MONAILabelException) -> int | None:
    """The 4xx a MONAI Label exception stands for, or None when it is a server fault."""
    if isinstance(exc, (ImageNotFoundException, LabelNotFoundException)):
        return 404
    if getattr(exc, "error", None) == MONAILabelError.INVALID_INPUT:
        return 422
    return None


def http_error(exc: MONAILabelException) -> HTTPException | None:
    """The ``HTTPException`` for ``exc``, or None when it must stay a 500."""
    status = status_for(exc)
    if status is None:
        return None
    return HTTPException(status_code=status, detail=public_message(getattr(exc, "msg", "") or str(exc)))


@contextlib.contextmanager
def monailabel_errors() -> Iterator[None]:
    """Inside a re-declared endpoint: raise MONAI Label's client errors as their 4xx."""
    try:
        yield
    except MONAILabelException as exc:
        mapped = http_error(exc)
        if mapped is None:
            raise
        logger.info("client error from MONAI Label: %s", mapped.detail)
        raise mapped from exc


async def _handle(request: Any, exc: Exception) -> JSONResponse:
    mapped = http_error(exc) if isinstance(exc, MONAILabelException) else None
    if mapped is None:  # a genuine fault: log it with its traceback and answer 500
        logger.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": "Internal Server Error"})
    logger.info("%s %s: %s", request.method, request.url.path, mapped.detail)
    return JSONResponse(status_code=mapped.status_code, content={"detail": mapped.detail})


def _starlette_app() -> object:
    from starlette.applications import Starlette

    return Starlette()


requires(
    "Starlette app.exception_handlers / middleware_stack (rebuilt lazily when reset to None)",
    "server.handlers (handlers added after the app started)",
    instance_attrs(_starlette_app, "exception_handlers", "middleware_stack", "build_middleware_stack"),
)


def install_exception_handlers(app: Any) -> None:
    """Register the mapping for every route, including those the app does not re-declare.

    MONAI Label builds its app (and Starlette its middleware stack, which copies the
    handlers) before the app's ``server_mode`` runs; resetting ``middleware_stack`` makes
    Starlette rebuild it, with these handlers, on the next request.
    """
    app.add_exception_handler(MONAILabelException, _handle)
    app.middleware_stack = None
