"""Token verification against a real local issuer (realm document over HTTP, RSA-signed tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from monailabel.config import settings
from monailabel.endpoints.user import auth as ml_auth

from brain_tumor_dev.oidc_issuer import ROLES, LocalIssuer, new_key
from brain_tumor_mri.server import auth
from brain_tumor_mri.server.auth import AuthError, TokenVerifier, bearer_token


@pytest.fixture
def issuer(monkeypatch):
    """A running realm, and MONAI Label's settings pointing at it (as the env would at server start)."""
    with LocalIssuer() as iss:
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", True)
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", iss.realm_uri)
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_TIMEOUT", 5)
        ml_auth.get_public_key.cache_clear()
        yield iss
    ml_auth.get_public_key.cache_clear()


def _hs256(payload: dict, secret: bytes) -> str:
    """An HS256 token made by hand (PyJWT refuses to use a public key as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(payload).encode())
    return (signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode()


def test_monailabels_own_decoding_rejects_every_token_with_pyjwt2(issuer):
    """Why ``auth.from_token`` exists: MONAI Label 0.8.5 calls jwt.decode without ``algorithms``."""
    good = issuer.token("alice", [ROLES["user"]])
    with pytest.raises(jwt.InvalidTokenError, match="algorithms"):
        auth.MONAILABEL_FROM_TOKEN(good)
    assert TokenVerifier().verify(good)[0].name == "alice"


def test_a_good_token_names_the_user_and_nests_roles(issuer):
    principal, claims = TokenVerifier().verify(issuer.token("alice", [ROLES["admin"]]), "10.0.0.1")
    assert principal.name == "alice" and principal.verified and principal.address == "10.0.0.1"
    assert set(ROLES.values()) <= set(principal.roles)
    assert claims["email"] == "alice@hospital.example"
    assert issuer.requests[f"/realms/{issuer.realm}"] == 1  # the key came from the realm document


def test_without_preferred_username_the_subject_names_the_user(issuer):
    token = issuer.token("bob", [ROLES["user"]], preferred_username=None)
    principal, _ = TokenVerifier().verify(token)
    assert principal.name == jwt.decode(token, options={"verify_signature": False})["sub"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda iss: iss.token("a", [ROLES["user"]], expires_in=-600), "expired at"),
        (lambda iss: iss.token("a", [ROLES["user"]], key=new_key()), "signature does not match"),
        (lambda iss: "not.a.token", "malformed token"),
        (lambda iss: jwt.encode({"preferred_username": "a"}, iss.key, algorithm="RS256"), "lacks the 'exp' claim"),
        (lambda iss: _hs256({"exp": time.time() + 60}, b"secret"), "not accepted"),
        (lambda iss: jwt.encode({"exp": time.time() + 60}, None, algorithm="none"), "not accepted"),
    ],
    ids=["expired", "other-key", "garbage", "no-exp", "hs256", "alg-none"],
)
def test_bad_tokens_get_401_saying_what_is_wrong(issuer, make, words):
    with pytest.raises(AuthError, match=words) as info:
        TokenVerifier().verify(make(issuer))
    assert info.value.status == 401


def test_hs256_signed_with_the_public_key_is_refused(issuer):
    """The algorithm-confusion attack: the realm's public key used as an HMAC secret."""
    pem = ml_auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI).encode()
    claims = {"preferred_username": "eve", "exp": time.time() + 60, "realm_access": {"roles": [ROLES["admin"]]}}
    forged = _hs256(claims, pem)
    with pytest.raises(AuthError, match="not accepted"):
        TokenVerifier().verify(forged)


def test_a_foreign_signature_rereads_the_realm_key_at_most_once_a_minute(issuer):
    verifier = TokenVerifier()
    verifier.verify(issuer.token("a", [ROLES["user"]]))
    for _ in range(3):
        with pytest.raises(AuthError):
            verifier.verify(issuer.token("a", [ROLES["user"]], key=new_key()))
    assert issuer.requests[f"/realms/{issuer.realm}"] == 2


def test_a_rotated_key_is_picked_up_without_restart(issuer):
    verifier = TokenVerifier()
    verifier.verify(issuer.token("a", [ROLES["user"]]))
    issuer.key = new_key()  # the provider rotates its signing key
    principal, _ = verifier.verify(issuer.token("a", [ROLES["user"]]))
    assert principal.name == "a"


def test_an_unreachable_realm_is_503(issuer, monkeypatch):
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", "http://127.0.0.1:9/realms/none")
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_TIMEOUT", 2)
    with pytest.raises(AuthError, match="cannot reach the identity provider") as info:
        TokenVerifier().verify(issuer.token("a", [ROLES["user"]]))
    assert info.value.status == 503


def test_from_token_is_monailabels_user_with_nested_roles(issuer):
    user = auth.from_token(issuer.token("carol", [ROLES["reviewer"]]))
    assert isinstance(user, ml_auth.User) and user.username == "carol"
    assert {ROLES["reviewer"], ROLES["annotator"], ROLES["user"]} <= set(user.roles)
    assert ROLES["admin"] not in user.roles


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None and bearer_token("Bearer ") is None
