"""The few ASGI pieces the server's wrappers share (types, a JSON answer, a header lookup)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def json_response(status: int, detail: str) -> tuple[Message, Message]:
    """The start and body messages of a ``{"detail": ...}`` answer, as FastAPI's errors look."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


async def send_json(send: Send, status: int, detail: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    start, body = json_response(status, detail)
    start["headers"].extend(extra_headers)
    await send(start)
    await send(body)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    return next((v for k, v in scope.get("headers", []) if k.lower() == name), None)
