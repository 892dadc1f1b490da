"""Run MONAI Label's inference endpoint off the event loop.

MONAI Label 0.8.5 declares ``POST /infer/{model}`` as ``async def`` but runs inference
synchronously inside it, so one inference freezes the whole server: ``/info``, saving
labels and every other request wait, and a burst of requests piles up unbounded. This
swaps the route for a plain ``def`` with the same signature, which FastAPI runs in its
worker threads; the infer tasks' ``Admission`` then bounds how many run and wait (503
beyond that). Applied only in the server process, once.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

logger = logging.getLogger(__name__)

_PATCHED = "_brain_tumor_sync_infer"


def run_inference_in_threads() -> bool:
    """Replace the infer route's endpoint by a synchronous twin; True if it was replaced."""
    try:
        from fastapi.routing import APIRoute
        from monailabel.app import app
        from monailabel.endpoints import infer as infer_endpoints
    except ImportError:  # not running inside the MONAI Label server
        return False
    for index, route in enumerate(app.router.routes):
        if not (isinstance(route, APIRoute) and route.path.endswith("/infer/{model}") and "POST" in route.methods):
            continue
        if getattr(route.endpoint, _PATCHED, False):
            return False
        original = route.endpoint

        def sync_infer(**kwargs: Any) -> Any:
            kwargs.pop("user", None)
            return infer_endpoints.run_inference(**kwargs)

        sync_infer.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
        setattr(sync_infer, _PATCHED, True)
        app.router.routes[index] = APIRoute(
            route.path, sync_infer, methods=list(route.methods), summary=route.summary,
            responses=route.responses, tags=route.tags, response_model=None,
        )  # fmt: skip
        logger.info("inference endpoint now runs in worker threads (server keeps answering during inference)")
        return True
    logger.warning("MONAI Label infer route not found; inference will block the event loop")
    return False
