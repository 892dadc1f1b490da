"""Who is making the current request: set once by the access gate, read by provenance.

MONAI Label's endpoints know the token's user but do not pass it to the datastore (a saved
label's params carry only what the client chose to send). The access gate verifies the
token before any endpoint runs and stores the caller here, in a context variable, so code
deeper in the same request (label saving, inference bookkeeping) can record who did it.
Context variables follow the request into FastAPI's worker threads and background tasks,
and never leak into another request.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    ``verified`` is True when ``name`` comes from a token the identity provider signed; with
    authentication off the name is whatever client id the client sent, or ``anonymous``.
    """

    name: str
    verified: bool
    roles: tuple[str, ...] = ()
    address: str = ""


_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("brain_tumor_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the request being served, or None outside a request."""
    return _CURRENT.get()


def set_principal(principal: Principal | None) -> contextvars.Token:
    """Make ``principal`` the caller for the rest of this request; returns the reset token."""
    return _CURRENT.set(principal)


def reset_principal(token: contextvars.Token) -> None:
    _CURRENT.reset(token)


def unverified(client_id: object, address: str = "") -> Principal:
    """The caller when authentication is off: the client's self-declared id, if any."""
    name = str(client_id).strip() if client_id else ""
    safe = "".join(c for c in name if c.isalnum() or c in "._-@")[:64]
    return Principal(name=safe or "anonymous", verified=False, address=address)


def acting_principal(client_id: object = None) -> Principal:
    """The verified caller of this request, else an unverified one named by ``client_id``.

    With authentication on the gate always sets a verified principal, so a client cannot
    claim someone else's name by sending another ``client_id``.
    """
    found = current_principal()
    if found is not None and found.verified:
        return found
    address = found.address if found is not None else ""
    return unverified(client_id, address)
