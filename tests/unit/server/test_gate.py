"""The access gate's own bookkeeping: Slicer download grants, the caller seen by the endpoint."""

from __future__ import annotations

import asyncio
import logging
import time

from brain_tumor_mri.server.gate import AccessGate, DownloadGrants
from brain_tumor_mri.server.principal import current_principal


def test_a_grant_is_one_use_per_address_and_image():
    grants = DownloadGrants(60)
    grants.give("10.0.0.1", "c1", "tok", "alice")
    assert grants.take("10.0.0.2", "c1") is None
    assert grants.take("10.0.0.1", "c2") is None
    grant = grants.take("10.0.0.1", "c1")
    assert grant is not None and grant.token == "tok" and grant.user == "alice"
    assert grants.take("10.0.0.1", "c1") is None


def test_a_grant_expires_and_zero_seconds_gives_none():
    grants = DownloadGrants(0.05)
    grants.give("10.0.0.1", "c1", "tok", "alice")
    time.sleep(0.1)
    assert grants.take("10.0.0.1", "c1") is None
    off = DownloadGrants(0)
    off.give("10.0.0.1", "c1", "tok", "alice")
    assert off.take("10.0.0.1", "c1") is None


def test_with_auth_off_the_endpoint_sees_an_unverified_caller_and_changes_are_audited(caplog):
    seen = []

    async def app(scope, receive, send):
        seen.append(current_principal())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        return None

    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/datastore/label",
        "headers": [],
        "query_string": b"image=c1&tag=final",
        "client": ("10.1.2.3", 5555),
    }
    with caplog.at_level(logging.INFO, logger="brain_tumor_mri.audit"):
        asyncio.run(AccessGate(app, enabled=False)(scope, receive, send))
    (who,) = seen
    assert who is not None and who.name == "anonymous" and not who.verified and who.address == "10.1.2.3"
    assert current_principal() is None  # nothing leaks out of the request
    assert "audit user=anonymous(unverified) ip=10.1.2.3 PUT /datastore/label?image=c1&tag=final -> 200" in caplog.text
