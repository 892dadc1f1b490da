"""Who may call which endpoint: the app's role table, one place, first match wins.

MONAI Label guards each route with ``Depends(RBAC(role))``, but its defaults are looser
than a hospital expects (any annotator may add images or update image info, the dataset
ZIP export is open to annotators, ``POST /reload`` has no guard at all) and its role
checks are flat (a token holding only the admin role is refused ``/info``). The app keeps
MONAI Label's checks and puts this table in front of every request, so the stricter of
the two applies and a route added later (by MONAI Label or another module of this app)
that the table does not name needs the admin role.

Roles nest: admin ⊃ reviewer ⊃ annotator ⊃ user. Users read; annotators also infer,
save labels and ask for the next sample; reviewers also see every saved version of a
label; only admins train, delete, or change the datastore.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass


class Permission(enum.IntEnum):
    """What a request needs, from nothing at all to the admin role (ordered)."""

    PUBLIC = 0  # no token (login, the API docs, static files)
    AUTHENTICATED = 1  # any valid token, whatever its roles
    READ = 2  # user
    ANNOTATE = 3  # annotator
    REVIEW = 4  # reviewer
    ADMIN = 5  # admin


#: The lowest role that grants each permission, in MONAI Label's role names (see ``role_names``).
ROLE_ORDER = ("user", "annotator", "reviewer", "admin")
_LOWEST_ROLE = {
    Permission.READ: "user",
    Permission.ANNOTATE: "annotator",
    Permission.REVIEW: "reviewer",
    Permission.ADMIN: "admin",
}


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    path: str  # a regular expression over the request path
    pattern: re.Pattern[str]
    permission: Permission
    what: str
    shown: str  # the paths as the README shows them


def _rule(methods: str, path: str, permission: Permission, what: str, shown: str = "") -> Rule:
    pattern = re.compile(f"^(?:{path})/?$")
    return Rule(frozenset(methods.split()), path, pattern, permission, what, shown or path.replace("\\", "") or "/")


P = Permission
#: First match wins; anything unmatched needs ADMIN. Paths exclude MONAI Label's API prefix.
RULES: tuple[Rule, ...] = (
    _rule("GET", "", P.PUBLIC, "API docs page"),
    _rule("GET", "/(docs|openapi\\.json|favicon\\.ico)", P.PUBLIC, "API docs and icon", "/docs, /openapi.json"),
    _rule("GET", "/static/.*", P.PUBLIC, "static files of the docs page", "/static/..."),
    _rule("GET", "/auth", P.PUBLIC, "is authentication on, and where to log in"),
    _rule("POST", "/auth/token", P.PUBLIC, "log in (password grant passed to the identity provider)"),
    _rule("GET", "/auth/token/valid", P.AUTHENTICATED, "is my token valid"),
    _rule("GET", "/info", P.READ, "app, models, labels, training status"),
    _rule(
        "GET",
        "/datastore/label/(history|version)",
        P.REVIEW,
        "every saved version of a label, who saved it",
        "/datastore/label/history, /datastore/label/version",
    ),
    _rule("GET", "/datastore/dataset", P.ADMIN, "export the whole datastore as a ZIP"),
    _rule(
        "GET",
        "/datastore(/image|/label)?(/info)?",
        P.READ,
        "list cases, download images and labels, info",
        "/datastore/, /datastore/image, /datastore/label, .../info",
    ),
    _rule("POST", "/activelearning/[^/]+", P.ANNOTATE, "Next Sample (reserves a case)", "/activelearning/{strategy}"),
    _rule("POST", "/infer/[^/]+|/infer/(wsi|wsi_v2)/[^/]+", P.ANNOTATE, "run a model", "/infer/{model}"),
    _rule("PUT", "/datastore/label", P.ANNOTATE, "save a label (kept as a new version)"),
    _rule(
        "PUT",
        "/datastore/label/info|/datastore/updatelabelinfo",
        P.ANNOTATE,
        "annotate a label's info (not its provenance)",
        "/datastore/label/info",
    ),
    _rule("GET", "/train|/scoring", P.READ, "training and scoring status", "/train/, /scoring/"),
    _rule("GET", "/session/[^/]+", P.READ, "session info", "/session/{id}"),
    _rule("PUT", "/session", P.ANNOTATE, "upload an image for a session", "/session/"),
    _rule("DELETE", "/session/[^/]+", P.ANNOTATE, "end a session", "/session/{id}"),
    _rule(
        "GET",
        "/proxy/dicom/.*|/ohif/.*",
        P.READ,
        "read through the DICOMweb proxy, OHIF viewer",
        "/proxy/dicom/..., /ohif/...",
    ),
)

#: What the table leaves to the default, listed for the README's role table.
ADMIN_ONLY = (
    "POST /train/..., DELETE /train/ (start, stop training)",
    "PUT /datastore/image (add a case), PUT /datastore/image/info, DELETE /datastore/... (remove cases, labels)",
    "GET, PUT, DELETE /model/... (model file info, download, replace, delete weights)",
    "POST and DELETE /scoring/..., /batch/..., GET /logs/..., POST /reload, POST /proxy/dicom/... (STOW)",
    "any route not listed above",
)


def required(method: str, path: str, api_prefix: str = "") -> tuple[Permission, str]:
    """The permission ``method path`` needs and the rule's description (unlisted: ADMIN)."""
    method = "GET" if method == "HEAD" else method
    if method == "OPTIONS":  # CORS preflight: carries no credentials and returns no data
        return Permission.PUBLIC, "CORS preflight"
    if api_prefix and path.startswith(api_prefix):
        path = path[len(api_prefix) :]
    for rule in RULES:
        if method in rule.methods and rule.pattern.match(path):
            return rule.permission, rule.what
    return Permission.ADMIN, "admin only"


def expand_roles(roles: Sequence[str], names: dict[str, str]) -> tuple[str, ...]:
    """The token's roles plus every role they imply (admin implies reviewer, annotator, user).

    ``names`` maps ``user``/``annotator``/``reviewer``/``admin`` to the realm's role names.
    """
    rank = {names[r]: i for i, r in enumerate(ROLE_ORDER)}
    top = max((rank[r] for r in roles if r in rank), default=-1)
    implied = [names[r] for r in ROLE_ORDER[: top + 1]]
    return tuple(dict.fromkeys([*roles, *implied]))


def allowed(permission: Permission, roles: Sequence[str], names: dict[str, str]) -> bool:
    """Whether a verified token with ``roles`` (already expanded) has ``permission``."""
    if permission <= Permission.AUTHENTICATED:
        return True
    return names[_LOWEST_ROLE[permission]] in roles


def lowest_role(permission: Permission, names: dict[str, str]) -> str:
    """The realm role name a caller needs at least, for messages."""
    return names[_LOWEST_ROLE[permission]] if permission in _LOWEST_ROLE else "none"


def role_table_markdown() -> str:
    """The README's role table, generated from ``RULES`` so they cannot disagree."""
    marks = {
        P.PUBLIC: ("✓", "✓", "✓", "✓", "✓"),
        P.AUTHENTICATED: ("", "✓", "✓", "✓", "✓"),
        P.READ: ("", "✓", "✓", "✓", "✓"),
        P.ANNOTATE: ("", "", "✓", "✓", "✓"),
        P.REVIEW: ("", "", "", "✓", "✓"),
        P.ADMIN: ("", "", "", "", "✓"),
    }
    rows = ["| request | what | no token | user | annotator | reviewer | admin |", "|---|---|---|---|---|---|---|"]
    for rule in RULES:
        row = " | ".join(marks[rule.permission])
        rows.append(f"| `{' '.join(sorted(rule.methods))} {rule.shown}` | {rule.what} | {row} |")
    for text in ADMIN_ONLY:
        rows.append(f"| {text} | admin only | {' | '.join(marks[P.ADMIN])} |")
    return "\n".join(rows)
