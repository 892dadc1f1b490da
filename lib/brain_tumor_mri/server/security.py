"""Puts the app's security layer around MONAI Label's server, once, when the server starts.

From the outside in, every HTTP request passes: the access gate (``gate``: tokens, the role
table, audit log, Slicer's Next Sample download), then the upload guard (``uploads``:
size limit, per-request temp folder, path-free error messages), then MONAI Label's own
middleware and routes. Both wrappers are plain ASGI around the app's built middleware
stack, so they cover every route, including routes re-declared or added after them.

Authentication itself is MONAI Label's (``MONAI_LABEL_AUTH_*`` environment settings); this
module only fixes its token decoding (``auth``) and says loudly when it is off.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from monailabel.config import settings

from ..config import AppConfig
from .auth import auth_enabled, check_realm_at_start, install_token_verification
from .compat import has_attrs, requires
from .gate import AccessGate
from .history_routes import add_history_routes
from .login_route import replace_login_route
from .uploads import UploadGuard, install_request_temp_dirs, request_temp_dirs_work, system_temp_dir

logger = logging.getLogger(__name__)

_MARK = "_brain_tumor_security"

requires(
    "Starlette app.middleware_stack / build_middleware_stack (wrapped once the server runs)",
    "server.security (access gate, upload guard)",
    has_attrs("starlette.applications", "Starlette", "build_middleware_stack"),
)
requires("tempfile asks tempfile.gettempdir() for its folder", "server.uploads", request_temp_dirs_work)


def _server_roots(cfg: AppConfig) -> list[str]:
    """Folders whose paths must never appear in an answer (cut to base names)."""
    roots = [system_temp_dir(), str(cfg.studies), str(cfg.weights_dir), sys.prefix, str(Path.home())]
    if cfg.app_dir is not None:
        roots.append(str(cfg.app_dir.parent.parent))  # the checkout holding apps/
    return roots


def install_security(cfg: AppConfig, app: Any | None = None) -> bool:
    """Wrap MONAI Label's FastAPI app (once); True if installed by this call."""
    if app is None:
        from monailabel.app import app as server_app

        app = server_app
    assert app is not None
    if getattr(app, _MARK, False):
        return False
    install_token_verification()
    replace_login_route(app)
    add_history_routes(app)
    temp_root = install_request_temp_dirs()
    stack = app.middleware_stack if app.middleware_stack is not None else app.build_middleware_stack()
    guarded = UploadGuard(stack, cfg.max_upload_mb * 2**20, temp_root, _server_roots(cfg))
    app.middleware_stack = AccessGate(guarded, auth_enabled(), settings.MONAI_LABEL_API_STR, cfg.auth_download_grant_s)
    setattr(app, _MARK, True)
    _announce(cfg)
    return True


def _announce(cfg: AppConfig) -> None:
    logger.info("uploads limited to %d MB per request; request temp files removed after each request",
                cfg.max_upload_mb)  # fmt: skip
    if settings.MONAI_LABEL_INFER_CONCURRENCY >= 0:
        logger.warning(
            "MONAI_LABEL_INFER_CONCURRENCY >= 0 runs inference in MONAI Label's own thread pool, outside the "
            "request: temp files of failed inferences may then outlive their request"
        )
    if auth_enabled():
        check_realm_at_start()
        return
    logger.warning(
        "AUTHENTICATION IS OFF: anyone who can reach this server's port can read every study, overwrite labels, "
        "train and delete. Listen only on localhost (--host 127.0.0.1), or turn authentication on "
        "(MONAI_LABEL_AUTH_ENABLE=true, MONAI_LABEL_AUTH_REALM_URI=...; README, 'Security')."
    )
