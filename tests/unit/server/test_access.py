"""The role table: the issue's rules, never looser than MONAI Label's own checks, nested roles."""

from __future__ import annotations

import pytest

from brain_tumor_mri.server.access import (
    Permission,
    allowed,
    expand_roles,
    required,
    role_table_markdown,
)
from tests.conftest import REPO

NAMES = {"user": "u", "annotator": "an", "reviewer": "rv", "admin": "ad"}
P = Permission


@pytest.mark.parametrize(
    "method, path, permission",
    [
        ("GET", "/info/", P.READ),
        ("GET", "/datastore/", P.READ),
        ("GET", "/datastore/image", P.READ),
        ("HEAD", "/datastore/image", P.READ),
        ("GET", "/datastore/label/info", P.READ),
        ("POST", "/infer/segmentation", P.ANNOTATE),
        ("PUT", "/datastore/label", P.ANNOTATE),
        ("POST", "/activelearning/random", P.ANNOTATE),
        ("GET", "/datastore/label/history", P.REVIEW),
        ("POST", "/train/segmentation", P.ADMIN),
        ("POST", "/train/", P.ADMIN),
        ("DELETE", "/train/", P.ADMIN),
        ("PUT", "/datastore/image", P.ADMIN),
        ("PUT", "/datastore/", P.ADMIN),
        ("PUT", "/datastore/image/info", P.ADMIN),
        ("DELETE", "/datastore/image", P.ADMIN),
        ("DELETE", "/datastore/label", P.ADMIN),
        ("GET", "/datastore/dataset", P.ADMIN),
        ("PUT", "/model/segmentation", P.ADMIN),
        ("DELETE", "/model/segmentation", P.ADMIN),
        ("POST", "/scoring/epistemic", P.ADMIN),
        ("POST", "/reload", P.ADMIN),
        ("GET", "/logs/", P.ADMIN),
        ("POST", "/auth/token", P.PUBLIC),
        ("GET", "/auth/", P.PUBLIC),
        ("OPTIONS", "/infer/segmentation", P.PUBLIC),
    ],
)
def test_the_issues_rules(method, path, permission):
    assert required(method, path)[0] == permission


@pytest.mark.parametrize("path", ["/infer/x/y", "/datastore/labelx", "/info/extra", "/something-new", "/datastore/x"])
def test_patterns_are_anchored_and_unknown_routes_need_admin(path):
    assert required("GET", path)[0] == P.ADMIN
    assert required("POST", path)[0] == P.ADMIN


def test_api_prefix_is_ignored():
    assert required("GET", "/api/info/", api_prefix="/api")[0] == P.READ


def _monailabel_route_roles():
    """(method, path, role MONAI Label's own RBAC dependency asks) for every guarded route."""
    from fastapi.routing import APIRoute
    from monailabel.app import app
    from monailabel.endpoints.user.auth import RBAC

    found = []
    for route in app.router.routes:
        if not isinstance(route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            if isinstance(dep.call, RBAC):
                for method in route.methods:
                    found.append((method, route.path, dep.call.roles))
    return found


def test_never_looser_than_monailabel():
    from monailabel.config import settings

    level = {
        settings.MONAI_LABEL_AUTH_ROLE_USER: P.READ,
        settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR: P.ANNOTATE,
        settings.MONAI_LABEL_AUTH_ROLE_REVIEWER: P.REVIEW,
        settings.MONAI_LABEL_AUTH_ROLE_ADMIN: P.ADMIN,
    }
    routes = _monailabel_route_roles()
    assert len(routes) > 40, "found too few guarded MONAI Label routes"
    looser = [(m, p, r) for m, p, r in routes if isinstance(r, str) and required(m, p)[0] < level[r]]
    assert not looser, looser


def test_roles_nest():
    assert set(expand_roles(["ad"], NAMES)) == {"u", "an", "rv", "ad"}
    assert set(expand_roles(["an", "other"], NAMES)) == {"u", "an", "other"}
    assert expand_roles(["other"], NAMES) == ("other",)
    assert allowed(P.READ, expand_roles(["ad"], NAMES), NAMES)
    assert not allowed(P.ADMIN, expand_roles(["rv"], NAMES), NAMES)
    assert not allowed(P.READ, (), NAMES) and allowed(P.AUTHENTICATED, (), NAMES)


def test_readme_role_table_is_generated_from_the_rules():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- role-table:start -->\n")[1].split("\n<!-- role-table:end -->")[0]
    assert block == role_table_markdown(), "README role table is stale: regenerate it from server/access.py"
