"""The access gate: every request is checked against the role table before any endpoint runs.

An ASGI wrapper around the whole server, so it covers MONAI Label's routes and any route
this app re-declares or adds, whoever declared it. For each request it:

* looks up what the request needs in ``access.RULES`` (unlisted: admin);
* with authentication on, verifies the bearer token (``auth.VERIFIER``) and answers 401
  (no, expired, foreign or malformed token) or 403 (role missing) with a message saying
  what is wrong and what is needed, before the request body is read;
* records the caller (``principal``) for provenance, and writes an audit line for every
  change, every download and every refusal (logger ``brain_tumor_mri.audit``);
* lets 3D Slicer fetch the image *Next Sample* just served to it: Slicer downloads that
  image with a plain HTTP GET that carries no ``Authorization`` header, which MONAI Label
  answers 401 and Slicer reports as "list index out of range" (MONAI Label issue #1493).
  After an authenticated *Next Sample* the gate grants the same client address one GET of
  that one image within ``grant_s`` seconds, made with the caller's own token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import anyio

from .access import Permission, allowed, lowest_role, required
from .asgi import ASGIApp, Message, Receive, Scope, Send, header, send_json
from .auth import VERIFIER, AuthError, TokenVerifier, bearer_token, role_names
from .principal import Principal, reset_principal, set_principal, unverified

logger = logging.getLogger(__name__)
audit = logging.getLogger("brain_tumor_mri.audit")

_NEXT_SAMPLE = "/activelearning/"
_IMAGE_DOWNLOAD = "/datastore/image"
_DOWNLOADS = ("/datastore/image", "/datastore/label", "/datastore/dataset", "/model/")
_MAX_GRANTS = 1000


@dataclass
class _Grant:
    token: str
    user: str
    expires: float


class DownloadGrants:
    """One-use permissions to GET a just-served image without a header, per client address."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._grants: dict[tuple[str, str], _Grant] = {}
        self._lock = threading.Lock()

    def give(self, address: str, image_id: str, token: str, user: str) -> None:
        if self.seconds <= 0 or not address or not image_id:
            return
        now = time.monotonic()
        with self._lock:
            self._grants = {k: g for k, g in self._grants.items() if g.expires > now}
            if len(self._grants) < _MAX_GRANTS:
                self._grants[(address, image_id)] = _Grant(token, user, now + self.seconds)

    def take(self, address: str, image_id: str) -> _Grant | None:
        with self._lock:
            grant = self._grants.pop((address, image_id), None)
        return grant if grant is not None and grant.expires > time.monotonic() else None


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class AccessGate:
    """ASGI wrapper enforcing the role table (when auth is on) and recording who did what."""

    def __init__(
        self,
        app: ASGIApp,
        enabled: bool,
        api_prefix: str = "",
        grant_s: float = 60.0,
        verifier: TokenVerifier = VERIFIER,
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.api_prefix = api_prefix
        self.grants = DownloadGrants(grant_s)
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"][len(self.api_prefix) :] if scope["path"].startswith(self.api_prefix) else scope["path"]
        permission, what = required(scope["method"], path)
        address = _address(scope)
        if not self.enabled:
            await self._serve(scope, receive, send, unverified(None, address), path, None)
            return
        if permission == Permission.PUBLIC:
            await self.app(scope, receive, send)
            return
        token = bearer_token((header(scope, b"authorization") or b"").decode("latin-1"))
        if token is None and scope["method"] == "GET" and path.rstrip("/") == _IMAGE_DOWNLOAD:
            scope, token = self._use_grant(scope, address)
        if token is None:
            await self._refuse(scope, send, 401, "authentication required: send 'Authorization: Bearer <token>' "
                               "(log in through POST /auth/token or your identity provider)", address)  # fmt: skip
            return
        try:
            principal, _ = await anyio.to_thread.run_sync(self.verifier.verify, token, address)
        except AuthError as exc:
            await self._refuse(scope, send, exc.status, exc.message, address)
            return
        names = role_names()
        if not allowed(permission, principal.roles, names):
            need = lowest_role(permission, names)
            mine = ", ".join(r for r in principal.roles if r in names.values()) or "none of this server's roles"
            message = f"{scope['method']} {path} needs the role {need!r} or higher ({what}); your token has {mine}"
            await self._refuse(scope, send, 403, message, address, principal.name)
            return
        await self._serve(scope, receive, send, principal, path, token)

    def _use_grant(self, scope: Scope, address: str) -> tuple[Scope, str | None]:
        image_id = (_query(scope).get("image") or [""])[0]
        grant = self.grants.take(address, image_id)
        if grant is None:
            return scope, None
        audit.info("audit user=%s ip=%s GET %s image=%s via the Next Sample download grant (Slicer)",
                   grant.user, address, _IMAGE_DOWNLOAD, image_id)  # fmt: skip
        headers = [*scope.get("headers", []), (b"authorization", f"Bearer {grant.token}".encode())]
        return {**scope, "headers": headers}, grant.token

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, address: str, user: str = "-") -> None:
        audit.warning(
            "audit user=%s ip=%s %s %s -> %d %s", user, address, scope["method"], scope["path"], status, message
        )
        await send_json(send, status, message, [(b"www-authenticate", b"Bearer")] if status == 401 else [])

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, path: str, token: str | None
    ) -> None:
        status = [0]
        next_sample = token is not None and scope["method"] == "POST" and path.startswith(_NEXT_SAMPLE)
        body = bytearray()
        audited = [False]

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif next_sample and status[0] == 200 and len(body) < 65536:
                body.extend(message.get("body", b""))
                if not message.get("more_body") and token is not None:
                    # before the answer goes out, so the client's download right after it finds the grant
                    self._grant_next_sample(bytes(body), principal, token)
            if message["type"] == "http.response.body" and not message.get("more_body") and not audited[0]:
                # also before the last byte goes out: whoever reads the log after the answer finds the line
                audited[0] = True
                self._audit(scope, principal, path, status[0])
            await send(message)

        reset = set_principal(principal)
        try:
            await self.app(scope, receive, watched_send)
        finally:
            reset_principal(reset)
            if not audited[0]:  # no complete answer (e.g. the app raised): still recorded
                self._audit(scope, principal, path, status[0])

    def _grant_next_sample(self, body: bytes, principal: Principal, token: str) -> None:
        try:
            image_id = json.loads(body or b"{}").get("id")
        except (ValueError, AttributeError):
            return
        if isinstance(image_id, str):
            self.grants.give(principal.address, image_id, token, principal.name)

    def _audit(self, scope: Scope, principal: Principal, path: str, status: int) -> None:
        method = scope["method"]
        if method in ("GET", "HEAD", "OPTIONS") and not path.startswith(_DOWNLOADS):
            return
        query = scope.get("query_string", b"").decode("latin-1")[:200]
        who = principal.name if principal.verified else f"{principal.name}(unverified)"
        audit.info("audit user=%s ip=%s %s %s%s -> %d", who, principal.address, method, scope["path"],
                   f"?{query}" if query else "", status)  # fmt: skip
