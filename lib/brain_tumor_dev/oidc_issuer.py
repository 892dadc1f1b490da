"""A small local OpenID Connect issuer that looks like a Keycloak realm to MONAI Label.

Tests (and a developer trying authentication with Slicer) start it on a free loopback port
and point the server at it (``env()``). It serves what MONAI Label's authentication reads:

* ``GET /realms/<realm>``: the realm document with its RSA ``public_key`` (what the server
  verifies tokens with);
* ``GET /realms/<realm>/.well-known/openid-configuration``: where the token endpoint is;
* ``POST /realms/<realm>/protocol/openid-connect/token``: the password grant MONAI Label's
  ``POST /auth/token`` (Slicer's login dialog) passes on, for the users it was given.

Tokens are real RS256 JWTs signed with a freshly generated 2048-bit key, with Keycloak's
claims (``preferred_username``, ``realm_access.roles``, ``exp``...). ``token()`` mints one
directly, also expired or signed by another key, for the negative cases.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROLES = {
    "user": "monailabel-user",
    "annotator": "monailabel-annotator",
    "reviewer": "monailabel-reviewer",
    "admin": "monailabel-admin",
}


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Account:
    password: str
    roles: list[str]


@dataclass
class LocalIssuer:
    """A running realm on ``127.0.0.1:<port>``; use as a context manager or call ``stop()``."""

    realm: str = "monailabel"
    client_id: str = "monailabel-app"
    accounts: dict[str, Account] = field(default_factory=dict)
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    requests: Counter = field(default_factory=Counter)  # path -> how often it was asked

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True)
        self._thread.start()

    @property
    def realm_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/{self.realm}"

    def env(self) -> dict[str, str]:
        """The MONAI Label settings that switch authentication on against this realm."""
        return {
            "MONAI_LABEL_AUTH_ENABLE": "true",
            "MONAI_LABEL_AUTH_REALM_URI": self.realm_uri,
            "MONAI_LABEL_AUTH_CLIENT_ID": self.client_id,
            "MONAI_LABEL_AUTH_TIMEOUT": "5",
            **{f"MONAI_LABEL_AUTH_ROLE_{k.upper()}": v for k, v in ROLES.items()},
        }

    def public_key_b64(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def token(
        self,
        username: str,
        roles: list[str],
        expires_in: float = 300,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """A Keycloak-style access token (RS256) for ``username`` with realm ``roles``."""
        now = int(time.time())
        payload = {
            "iss": self.realm_uri,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
            "typ": "Bearer",
            "azp": self.client_id,
            "iat": now,
            "exp": int(now + expires_in),
            "preferred_username": username,
            "email": f"{username}@hospital.example",
            "name": username.title(),
            "realm_access": {"roles": roles},
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": "test-key"})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LocalIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(issuer: LocalIssuer) -> type[BaseHTTPRequestHandler]:
    base = f"/realms/{issuer.realm}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counts instead
            return

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            issuer.requests[self.path] += 1
            if self.path == base:
                self._json(200, {"realm": issuer.realm, "public_key": issuer.public_key_b64(),
                                 "token-service": f"{issuer.realm_uri}/protocol/openid-connect",
                                 "tokens-not-before": 0})  # fmt: skip
            elif self.path == f"{base}/.well-known/openid-configuration":
                self._json(200, {"issuer": issuer.realm_uri,
                                 "token_endpoint": f"{issuer.realm_uri}/protocol/openid-connect/token",
                                 "grant_types_supported": ["password"],
                                 "id_token_signing_alg_values_supported": ["RS256"]})  # fmt: skip
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            issuer.requests[self.path] += 1
            if self.path != f"{base}/protocol/openid-connect/token":
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            account = issuer.accounts.get(form.get("username", ""))
            if form.get("grant_type") != "password" or account is None or account.password != form.get("password"):
                self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                return
            token = issuer.token(form["username"], account.roles)
            self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

    return Handler
