"""``/model/{model}``: download the served weights, see what serves, replace them (admins).

MONAI Label serves these routes from an infer task's ``path``, which this app's tasks do
not have (their weights come from ``ModelStore``: the datastore's published model, else
the shipped one), so they answered 404/500. The twins here work on the stores:

- ``GET /model/{model}``: a ZIP of every weights + sidecar pair that serves now;
- ``GET /model/info/{model}``: name, origin (published/shipped), version, sha256 per file;
- ``PUT /model/{model}``: an archive of the same shape, validated and published atomically,
  the previous pair kept (``model_files``); admin role (MONAI Label's RBAC dependency);
- ``DELETE /model/{model}``: refused (405): removing the served weights is never needed,
  replacing them is ``PUT`` and the replaced pair is kept.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, File, HTTPException, UploadFile
from fastapi.responses import Response
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

from ..imageio import InputError
from ..networks.store import ModelStore
from . import model_files
from . import validation as v
from .route_table import Route, register_routes

logger = logging.getLogger(__name__)

ROUTES = [
    ("GET", "/model/{model}"),
    ("GET", "/model/info/{model}"),
    ("PUT", "/model/{model}"),
    ("DELETE", "/model/{model}"),
]
register_routes("server.api_models", ROUTES)

ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN


def model_stores(ctx: Any, model: str) -> list[ModelStore]:
    """The weights stores behind ``model`` (404 for a model this server does not serve)."""
    v.known_name("model", model, tuple(ctx.served.get("model", ())))
    if model == "segmentation":
        return [ctx.models.seg_store()]
    if model == "classification":
        stores = ctx.models.classifier().stores
        return [stores["2d"], stores["3d"]]
    raise v.not_found(f"model {model!r} has no weights files")


def model_routes(ctx: Any) -> list[Route]:
    def download(model: str, user: User = Depends(RBAC(ADMIN))) -> Response:
        """A ZIP of the weights + sidecar pairs that serve ``model`` now."""
        data = model_files.weights_archive(model_stores(ctx, model))
        if data is None:
            raise v.not_found(f"no weights serve model {model!r} (none published, none shipped)")
        headers = {"Content-Disposition": f'attachment; filename="{model}-weights.zip"'}
        return Response(content=data, media_type="application/zip", headers=headers)

    def info(model: str, user: User = Depends(RBAC(ADMIN))) -> Any:
        """What serves ``model``: per weights file its origin, version and sha256."""
        return {"model": model, "weights": model_files.weights_info(model_stores(ctx, model))}

    def replace(model: str, file: UploadFile = File(...), user: User = Depends(RBAC(ADMIN))) -> Any:
        """Publish the weights in an uploaded ZIP (as ``GET`` gives it) after checking they load."""
        stores = model_stores(ctx, model)
        try:
            result = model_files.replace_weights(stores, file.file)
        except InputError as exc:
            raise v.unprocessable(f"model {model}: {exc}") from None
        logger.info("model %s replaced by %s: %s", model, user.username, result)
        return {"model": model, **result}

    def delete(model: str, user: User = Depends(RBAC(ADMIN))) -> Any:
        """Refused: the served weights can be replaced (PUT), not removed."""
        model_stores(ctx, model)
        raise HTTPException(
            status_code=405,
            detail=f"model {model}: deleting the served weights is not supported; replace them with "
            f"PUT /model/{model} (the replaced weights are kept)",
            headers={"Allow": "GET, PUT"},
        )

    return [
        Route("GET", "/model/{model}", download, "ZIP of the serving weights + sidecars"),
        Route("GET", "/model/info/{model}", info, "origin, version, sha256 of the serving weights"),
        Route(
            "PUT",
            "/model/{model}",
            replace,
            "validated, atomic, previous kept; admin only",
            summary=f"{'|RBAC: ' + ADMIN + '| - ' if settings.MONAI_LABEL_AUTH_ENABLE else ''}"
            "Replace the served weights (ZIP as downloaded)",
        ),  # fmt: skip
        Route("DELETE", "/model/{model}", delete, "refused with 405"),
    ]


def routes(ctx: Any) -> list[Route]:
    """The model routes this module re-declares."""
    return model_routes(ctx)
