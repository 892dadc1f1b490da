"""Surgery on MONAI Label's FastAPI route table: re-declare a route, hide one behind a 404.

A re-declared route keeps the original's path, summary, tags and schema visibility unless
told otherwise; the MONAI Label routes a module touches are registered with ``compat`` via
``register_routes`` at import, so an upgrade that moves one fails at server start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute

from .compat import requires

logger = logging.getLogger(__name__)

PATCHED = "_brain_tumor_api"


@dataclass(frozen=True)
class Route:
    """A re-declared endpoint: MONAI Label's ``method path`` now served by ``endpoint``.

    ``summary`` and ``hidden`` override the original's; ``why`` says what the new one adds.
    """

    method: str
    path: str
    endpoint: Callable[..., Any]
    why: str
    summary: str | None = None
    hidden: bool | None = None


@dataclass(frozen=True)
class Unsupported:
    """A MONAI Label route this app does not offer: answered 404 with ``reason``, not in the schema."""

    method: str
    path: str
    reason: str


def _find(routes: list[Any], method: str, path: str) -> int | None:
    for index, route in enumerate(routes):
        if isinstance(route, APIRoute) and route.path == path and method in route.methods:
            return index
    return None


def route_exists(method: str, path: str) -> Callable[[], bool]:
    """A compat check: MONAI Label's app serves ``method path``."""

    def check() -> bool:
        from monailabel.app import app

        return _find(app.router.routes, method, _full(path)) is not None

    return check


def _full(path: str) -> str:
    from monailabel.config import settings

    return f"{settings.MONAI_LABEL_API_STR}{path}"


def replace_route(app: Any, route: Route) -> None:
    """Serve ``route.method route.path`` with ``route.endpoint``, keeping the original's docs."""
    path = _full(route.path)
    index = _find(app.router.routes, route.method, path)
    if index is None:
        raise RuntimeError(f"MONAI Label route {route.method} {path} not found (see server.compat)")
    old = app.router.routes[index]
    setattr(route.endpoint, PATCHED, True)
    new = APIRoute(
        path, route.endpoint, methods=[route.method], summary=route.summary or old.summary, tags=old.tags,
        responses=old.responses, response_model=None, deprecated=old.deprecated,
        include_in_schema=old.include_in_schema if route.hidden is None else not route.hidden,
    )  # fmt: skip
    if len(old.methods) > 1:  # e.g. GET+HEAD on one route: keep the other methods on the original
        old.methods.discard(route.method)
        app.router.routes.insert(index, new)
    else:
        app.router.routes[index] = new


def unsupported_endpoint(reason: str) -> Callable[..., Any]:
    """An endpoint that answers every request with 404 and ``reason``."""

    def endpoint() -> None:
        raise HTTPException(status_code=404, detail=reason)

    return endpoint


def register_routes(used_by: str, routes: list[tuple[str, str]]) -> None:
    """Register the MONAI Label routes a module re-declares or hides (checked at server start)."""
    for method, path in routes:
        requires(f"route {method} {path}", used_by, route_exists(method, path))
