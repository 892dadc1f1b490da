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
from typing import Any

from . import api_datastore, api_models, api_tasks
from .compat import check_monailabel
from .handlers import install_exception_handlers
from .route_table import PATCHED, Route, replace_route, unsupported_endpoint

logger = logging.getLogger(__name__)


def install_api(ctx: Any) -> list[str]:
    """Re-declare, hide and guard MONAI Label's routes for this app; returns what changed.

    Idempotent: a second call in the same process changes nothing.
    """
    from monailabel.app import app

    check_monailabel(include_routes=True)  # the api modules registered what they rely on
    if any(getattr(getattr(r, "endpoint", None), PATCHED, False) for r in app.router.routes):
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
