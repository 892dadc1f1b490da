"""Checks a request must pass before MONAI Label's code sees it (the API edge).

MONAI Label's endpoints trust their input: a ``params`` form field that is not JSON, an
unknown model or strategy name, or a training option out of range surfaces deep inside
as a ``JSONDecodeError``, a ``KeyError`` or a failed run, i.e. as a 500 or a silent no-op.
Each helper here checks one thing and raises an ``HTTPException`` with a 4xx whose message
names the field and the problem (never a server path), so a client can fix its request.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import HTTPException

from ..answers import ANSWER_EXTENSIONS
from ..layout import IMAGE_EXTS_2D, IMAGE_EXTS_3D, validate_case_id

#: What the infer tasks can answer (``.seg.nrrd``: Slicer segments; ``.dcm``: DICOM SEG, PACS cases only).
RESULT_EXTENSIONS = ANSWER_EXTENSIONS
#: Labels are small integers; anything else would make Slicer misread the segments.
RESULT_DTYPES = ("uint8",)
#: Request keys MONAI Label fills from the URL and the upload; ``params`` must not override them.
RESERVED_INFER_KEYS = ("model", "image", "file", "label", "session", "session_id")
#: Image files the datastore accepts: 3D cases and 2D pictures (classification).
UPLOAD_EXTENSIONS = IMAGE_EXTS_3D + IMAGE_EXTS_2D
#: Longest id or tag accepted (file names of the datastore are built from them).
MAX_ID_LENGTH = 128


def unprocessable(detail: str) -> HTTPException:
    """422: the request is well-formed HTTP but its content is wrong."""
    return HTTPException(status_code=422, detail=detail)


def not_found(detail: str) -> HTTPException:
    """404: the request names something the server does not have."""
    return HTTPException(status_code=404, detail=detail)


def json_object(field: str, text: str | None) -> dict[str, Any]:
    """Parse a JSON-object form field (``params``, ``info``); empty means ``{}``."""
    if text is None or not str(text).strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise unprocessable(f"{field}: not valid JSON ({_short(exc)})") from None
    if not isinstance(value, dict):
        raise unprocessable(f"{field}: expected a JSON object, got {_json_type(value)}")
    return value


def known_name(kind: str, name: str, names: Collection[str]) -> str:
    """``name`` must be one of ``names`` (a model, strategy, scoring method, trainer)."""
    if name not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise not_found(f"unknown {kind} {name!r}; this server has: {listed}")
    return name


def case_id(what: str, value: str | None) -> str:
    """An image id or label tag: non-empty, no path parts, bounded length."""
    if value is None or not str(value).strip():
        raise unprocessable(f"{what}: missing (an image id is required)")
    if len(value) > MAX_ID_LENGTH:
        raise unprocessable(f"{what}: longer than {MAX_ID_LENGTH} characters")
    try:
        return validate_case_id(value)
    except ValueError as exc:
        raise unprocessable(f"{what}: {exc}") from None


def upload_extension(what: str, filename: str | None) -> str:
    """The accepted image extension an uploaded file name ends with."""
    name = (filename or "").lower()
    for ext in sorted(UPLOAD_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    raise unprocessable(f"{what}: file type not accepted; upload one of {', '.join(UPLOAD_EXTENSIONS)}")


def infer_params(params: Mapping[str, Any]) -> None:
    """The infer ``params`` keys this app reads must hold values it can honour."""
    reserved = sorted(k for k in params if k in RESERVED_INFER_KEYS)
    if reserved:
        raise unprocessable(f"params: {reserved} cannot be set in params; use the URL and the upload fields")
    ext = params.get("result_extension")
    if ext is not None and ext not in RESULT_EXTENSIONS:
        allowed = ", ".join(RESULT_EXTENSIONS)
        raise unprocessable(f"params: result_extension {ext!r} not supported; use one of {allowed}")
    dtype = params.get("result_dtype")
    if dtype is not None and dtype not in RESULT_DTYPES:
        raise unprocessable(f"params: result_dtype {dtype!r} not supported; labels are {' or '.join(RESULT_DTYPES)}")


def no_run_sync(run_sync: bool | None, what: str, status_path: str) -> None:
    """Long jobs run in the background; running one inside the request would stall the server."""
    if run_sync:
        raise unprocessable(
            f"run_sync: {what} runs in the background on this server; omit run_sync and poll GET {status_path}"
        )


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]
