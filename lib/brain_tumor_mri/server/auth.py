"""Bearer-token verification for MONAI Label's authentication, made to work and to explain itself.

MONAI Label (0.8.5) verifies a token with ``jwt.decode(token, key, options=...)`` against the
public key its realm document publishes (``GET <MONAI_LABEL_AUTH_REALM_URI>`` → Keycloak's
``{"public_key": ...}``). With PyJWT 2, which it requires, that call without ``algorithms``
raises for every token, so switching authentication on locks everybody out; PyJWT 1 would
instead have accepted any algorithm the token names (the classic "alg" confusion). This
module keeps MONAI Label's mechanism — its settings, its realm-document key fetch
(``get_public_key``), its ``get_current_user`` and ``RBAC`` dependencies — and replaces
only the function that decodes the token (``from_token``) with one that:

* accepts only RSA signatures (the realm document's key is an RSA key) and requires ``exp``;
* answers 401 with what is wrong (missing, expired, signed by another key, malformed) and
  503 when the identity provider cannot be reached, instead of one generic message or a 500;
* re-reads the realm's key at most once a minute when a signature does not verify, so a key
  rotated at the identity provider is picked up without a restart;
* names the user by ``preferred_username`` (MONAI Label's setting), else ``sub``, instead of
  failing on tokens without it;
* expands nested roles (admin implies reviewer, annotator and user; see ``access``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import jwt
import requests
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.endpoints.user import auth as ml_auth

from .access import ROLE_ORDER, expand_roles
from .compat import has_attrs, requires
from .principal import Principal

logger = logging.getLogger(__name__)

#: Signature algorithms that use the realm document's RSA public key; never HS* or "none".
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: Seconds of clock difference tolerated between this server and the identity provider.
CLOCK_LEEWAY_S = 30
#: At most one re-read of the realm's key per this many seconds (after a signature failure).
KEY_REFRESH_S = 60.0

requires(
    "monailabel.endpoints.user.auth: from_token, get_public_key (cached), get_current_user, RBAC, User",
    "server.auth (token verification)",
    has_attrs("monailabel.endpoints.user.auth", "get_public_key", "cache_clear"),
)
requires(
    "monailabel.endpoints.user.auth.User(username, email, name, roles)",
    "server.auth",
    lambda: ml_auth.User(username="u", email=None, name=None, roles=["r"]).roles == ["r"],
)


#: MONAI Label's own decoder, kept to show (in a test) why it is replaced.
MONAILABEL_FROM_TOKEN = ml_auth.from_token


class AuthError(Exception):
    """A request's credentials are missing or wrong (401), or cannot be checked now (503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def auth_enabled() -> bool:
    return bool(settings.MONAI_LABEL_AUTH_ENABLE)


def role_names() -> dict[str, str]:
    """``user``/``annotator``/``reviewer``/``admin`` -> the realm's role names (MONAI Label settings)."""
    return {
        "user": settings.MONAI_LABEL_AUTH_ROLE_USER,
        "annotator": settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR,
        "reviewer": settings.MONAI_LABEL_AUTH_ROLE_REVIEWER,
        "admin": settings.MONAI_LABEL_AUTH_ROLE_ADMIN,
    }


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _claim(payload: Mapping[str, Any], path: str) -> Any:
    """A claim by MONAI Label's ``#``-separated path (``realm_access#roles``)."""
    value: Any = payload
    for part in path.split("#"):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class TokenVerifier:
    """Verifies tokens against the realm's public key as MONAI Label fetches it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def _key(self) -> str:
        try:
            return str(ml_auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI))
        except (requests.RequestException, KeyError, ValueError) as exc:
            logger.error("cannot read the public key from realm %s: %s", settings.MONAI_LABEL_AUTH_REALM_URI, exc)
            raise AuthError(503, "cannot reach the identity provider to check the token; try again shortly") from exc

    def _refresh_key(self) -> bool:
        """Forget the cached key (rate-limited); True if it will be re-read."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_refresh < KEY_REFRESH_S:
                return False
            self._last_refresh = now
        ml_auth.get_public_key.cache_clear()
        logger.info("signature did not verify: re-reading the realm's public key")
        return True

    def decode(self, token: str) -> dict[str, Any]:
        """The token's verified claims; ``AuthError`` (401) naming what is wrong."""
        try:
            return self._decode_with(self._key(), token)
        except jwt.InvalidSignatureError:
            if self._refresh_key():
                try:
                    return self._decode_with(self._key(), token)
                except jwt.InvalidSignatureError:
                    pass
            raise AuthError(401, "token signature does not match this server's identity provider") from None

    @staticmethod
    def _decode_with(key: str, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(RSA_ALGORITHMS),
                options={"require": ["exp"], "verify_aud": False},
                leeway=CLOCK_LEEWAY_S,
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.ExpiredSignatureError:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
            when = datetime.fromtimestamp(float(exp), timezone.utc).isoformat(timespec="seconds") if exp else "?"
            raise AuthError(401, f"token expired at {when}; log in again") from None
        except jwt.InvalidAlgorithmError:
            alg = jwt.get_unverified_header(token).get("alg")
            raise AuthError(401, f"token algorithm {alg!r} is not accepted; expected one of {RSA_ALGORITHMS}") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token is not valid yet (check the clocks of this server and the provider)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"malformed token ({exc})") from None

    def verify(self, token: str, address: str = "") -> tuple[Principal, dict[str, Any]]:
        """The verified caller (name from the username claim, else ``sub``; nested roles expanded) and claims."""
        payload = self.decode(token)
        name = payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or payload.get("sub")
        if not name or not isinstance(name, str):
            raise AuthError(401, f"token names no user (no {settings.MONAI_LABEL_AUTH_TOKEN_USERNAME!r} or 'sub')")
        raw = _claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES)
        roles = [r for r in raw if isinstance(r, str)] if isinstance(raw, list) else []
        return Principal(name=name, verified=True, roles=expand_roles(roles, role_names()), address=address), payload


VERIFIER = TokenVerifier()


def from_token(token: str) -> Any:
    """Drop-in for ``monailabel.endpoints.user.auth.from_token`` (used by its ``get_current_user``)."""
    if not auth_enabled():
        return ml_auth.DEFAULT_USER
    try:
        principal, payload = VERIFIER.verify(token)
    except AuthError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        raise HTTPException(status_code=exc.status, detail=exc.message, headers=headers) from None
    return ml_auth.User(
        username=principal.name,
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=list(principal.roles),
    )


def install_token_verification() -> None:
    """Make MONAI Label's ``get_current_user`` (and so every ``RBAC`` check) use ``from_token`` above."""
    ml_auth.from_token = from_token


def check_realm_at_start() -> None:
    """Log whether the realm's key can be read now (the server starts either way)."""
    try:
        VERIFIER._key()
        names = ", ".join(role_names()[r] for r in ROLE_ORDER)
        logger.info("authentication ON: tokens verified against realm %s (roles %s)",
                    settings.MONAI_LABEL_AUTH_REALM_URI, names)  # fmt: skip
    except AuthError:
        logger.error("authentication ON but the realm %s cannot be read yet; requests get 503 until it can",
                     settings.MONAI_LABEL_AUTH_REALM_URI)  # fmt: skip
