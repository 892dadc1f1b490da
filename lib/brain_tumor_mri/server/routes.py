"""The app's HTTP surface: MONAI Label's routes, with the ones that need it re-declared.

MONAI Label's endpoints trust their input (a bad ``params`` string, an unknown model or
id is a 500), run inference inside an ``async`` handler (freezing the server) and offer
things this app cannot do (whole-slide pathology inference, batch inference). At server
start, ``install_api`` swaps those routes in MONAI Label's FastAPI app for validating
twins with the same path, parameters and role dependency (``api_datastore``,
``api_tasks``, ``api_models``), hides the unsupported ones behind a clear 404, and adds
the exception mapping of ``handlers``. Every route it touches is registered in ``compat``
so a MONAI Label upgrade that moves one fails at start instead of silently.
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

_PATCHED = "_brain_tumor_api"


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
    setattr(route.endpoint, _PATCHED, True)
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


def install_api(ctx: Any) -> list[str]:
    """Re-declare, hide and guard MONAI Label's routes for this app; returns what changed.

    Idempotent: a second call in the same process changes nothing.
    """
    from monailabel.app import app

    from . import api_datastore, api_models, api_tasks
    from .compat import check_monailabel
    from .handlers import install_exception_handlers

    check_monailabel(include_routes=True)  # the api modules registered what they rely on
    if any(getattr(getattr(r, "endpoint", None), _PATCHED, False) for r in app.router.routes):
        return []
    routes = api_datastore.routes(ctx) + api_tasks.routes(ctx) + api_models.routes(ctx)
    unsupported = api_tasks.UNSUPPORTED
    declared = {(r.method, r.path) for r in routes} | {(u.method, u.path) for u in unsupported}
    registered = set(api_datastore.ROUTES) | set(api_tasks.ROUTES) | set(api_models.ROUTES)
    if declared != registered:  # a route re-declared without its compat entry, or the reverse
        raise RuntimeError(f"routes declared and registered differ: {sorted(declared ^ registered)}")
    changed = []
    for route in routes:
        replace_route(app, route)
        changed.append(f"{route.method} {route.path}: {route.why}")
    for u in unsupported:
        replace_route(app, Route(u.method, u.path, unsupported_endpoint(u.reason), u.reason, hidden=True))
        changed.append(f"{u.method} {u.path}: hidden, 404 ({u.reason})")
    install_exception_handlers(app)
    app.openapi_schema = None  # regenerate the schema from the new routes
    logger.info("API: %d routes re-declared, %d hidden", len(routes), len(unsupported))
    return changed
