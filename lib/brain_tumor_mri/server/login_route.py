"""``POST /auth/token`` (Slicer's login dialog) answering 401 for wrong credentials, not 500.

MONAI Label passes the user's name and password to the realm's token endpoint (password
grant) and calls ``raise_for_status()`` on the answer, so a mistyped password comes back as
"500 Internal Server Error" and an unreachable identity provider hangs the whole server's
event loop for up to 30 s (the call is made inside an ``async`` endpoint). This twin does
the same exchange in a worker thread and answers 401 (refused), 503 (unreachable) or 502.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import requests
from fastapi import Depends, HTTPException
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.config import settings
from monailabel.endpoints.user import auth as ml_auth

from .compat import has_attrs, requires

logger = logging.getLogger(__name__)

requires(
    "monailabel.endpoints.user.auth.token_uri (realm's token endpoint from its openid-configuration)",
    "server.login_route",
    has_attrs("monailabel.endpoints.user.auth", "token_uri"),
)


def login(form_data: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
    """Exchange a user name and password for the realm's access token (password grant)."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return {"access_token": None, "token_type": None}
    data = {
        "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID,
        "username": form_data.username,
        "password": form_data.password,
        "grant_type": "password",
    }
    try:
        response = requests.post(str(ml_auth.token_uri()), data=data, timeout=settings.MONAI_LABEL_AUTH_TIMEOUT)
    except (requests.RequestException, ValueError) as exc:
        logger.error("login: identity provider unreachable: %s", exc)
        raise HTTPException(status_code=503, detail="cannot reach the identity provider; try again shortly") from exc
    if response.status_code in (400, 401, 403):
        logger.warning("login refused for user %r by the identity provider", form_data.username)
        raise HTTPException(status_code=401, detail="login failed: wrong user name or password")
    if response.status_code != 200:
        raise HTTPException(status_code=502, detail=f"identity provider answered {response.status_code}")
    return dict(response.json())


def replace_login_route(app: Any) -> bool:
    """Swap MONAI Label's ``POST /auth/token`` for ``login`` (present only when auth is on)."""
    path = f"{settings.MONAI_LABEL_API_STR}/auth/token"
    for index, route in enumerate(app.router.routes):
        if isinstance(route, APIRoute) and route.path == path and "POST" in route.methods:
            if route.endpoint is login:
                return False
            app.router.routes[index] = APIRoute(path, login, methods=["POST"], summary=route.summary, tags=route.tags)
            return True
    return False
