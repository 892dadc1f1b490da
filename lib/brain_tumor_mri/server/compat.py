"""Checks, at app start, every MONAI Label internal this app relies on.

The adapters in ``server/`` lean on a few things MONAI Label does not promise to keep:
private attributes of ``LocalDatastore``, the route table of its FastAPI app and the
signature of its inference endpoint. A different MONAI Label release could change any of
them silently and break label saving or inference in odd ways at the first request. This
module names each requirement once; ``check_monailabel`` verifies all of them when the
app starts and fails with one message listing what is missing and which version was tested.

Other modules of ``server/`` add what they rely on with ``requires(...)`` at import time,
next to the code that uses it, so the list cannot drift from the code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The MONAI Label release this app is built and tested against (pinned in pyproject.toml).
TESTED_MONAILABEL = "0.8.5"


class IncompatibleMonaiLabel(RuntimeError):
    """The installed MONAI Label lacks something this app relies on."""


@dataclass(frozen=True)
class Requirement:
    """One thing the app relies on: what it is, who needs it, and how to check it."""

    what: str
    used_by: str
    check: Callable[[], bool]


_REQUIREMENTS: list[Requirement] = []


def requires(what: str, used_by: str, check: Callable[[], bool]) -> None:
    """Register a requirement; ``check`` returns True when it holds (exceptions count as False)."""
    _REQUIREMENTS.append(Requirement(what, used_by, check))


def has_attrs(module: str, name: str, *attrs: str) -> Callable[[], bool]:
    """A check that ``module.name`` exists and has every attribute in ``attrs``."""

    def check() -> bool:
        obj = getattr(importlib.import_module(module), name)
        return all(hasattr(obj, a) for a in attrs)

    return check


def has_params(module: str, name: str, *params: str) -> Callable[[], bool]:
    """A check that callable ``module.name`` accepts every parameter in ``params``."""

    def check() -> bool:
        fn = getattr(importlib.import_module(module), name)
        return set(params) <= set(inspect.signature(fn).parameters)

    return check


def instance_attrs(factory: Callable[[], object], *attrs: str) -> Callable[[], bool]:
    """A check that the object ``factory()`` makes has every attribute in ``attrs``."""

    def check() -> bool:
        obj = factory()
        return all(hasattr(obj, a) for a in attrs)

    return check


def _route_exists(path_suffix: str, method: str) -> Callable[[], bool]:
    def check() -> bool:
        from fastapi.routing import APIRoute
        from monailabel.app import app

        return any(
            isinstance(r, APIRoute) and r.path.endswith(path_suffix) and method in r.methods for r in app.router.routes
        )

    return check


def installed_version() -> str:
    """The installed MONAI Label version string."""
    import monailabel

    return str(getattr(monailabel, "__version__", "unknown"))


def check_monailabel(include_routes: bool = False) -> list[str]:
    """Verify every registered requirement; raise ``IncompatibleMonaiLabel`` naming all failures.

    Route checks need MONAI Label's FastAPI app, which exists only in the server process,
    so they run only with ``include_routes``. Returns the list of requirements checked.
    """
    _register_core()
    failures = []
    checked = []
    for req in _REQUIREMENTS:
        if req.what.startswith("route ") and not include_routes:
            continue
        try:
            ok = bool(req.check())
        except Exception as exc:  # any failure to even look counts as missing
            logger.debug("compat check %r raised %s", req.what, exc)
            ok = False
        checked.append(req.what)
        if not ok:
            failures.append(f"{req.what} (used by {req.used_by})")
    version = installed_version()
    if failures:
        raise IncompatibleMonaiLabel(
            f"MONAI Label {version} lacks what this app relies on: {'; '.join(failures)}. "
            f"This app is tested with monailabel=={TESTED_MONAILABEL}; install that version."
        )
    if version != TESTED_MONAILABEL:
        logger.warning("MONAI Label %s: all %d checked internals are present, but this app is tested with %s",
                       version, len(checked), TESTED_MONAILABEL)  # fmt: skip
    return checked


_core_registered = False


def _register_core() -> None:
    """Requirements of the datastore and route adapters (registered once)."""
    global _core_registered
    if _core_registered:
        return
    _core_registered = True
    local = "monailabel.datastore.local"
    requires(
        "LocalDatastore private API (_datastore, _filename, _lock_file, _datastore_config_path, "
        "_init_from_datastore_file, _update_datastore_file, _config_ts)",
        "server.datastore (validated, atomic label writes)",
        has_attrs(local, "LocalDatastore", "_filename", "_init_from_datastore_file", "_update_datastore_file"),
    )
    requires(
        "LocalDatastoreModel.objects / label_path and DataModel(info, ext)",
        "server.datastore",
        lambda: _datastore_models_ok(local),
    )
    requires(
        "endpoint monailabel.endpoints.infer.run_inference(background_tasks, model, image, session_id, params, "
        "file, label, output)",
        "server.routes (inference off the event loop)",
        has_params(
            "monailabel.endpoints.infer",
            "run_inference",
            "background_tasks",
            "model",
            "image",
            "session_id",
            "params",
            "file",
            "label",
            "output",
        ),  # fmt: skip
    )
    requires("route POST /infer/{model}", "server.routes", _route_exists("/infer/{model}", "POST"))


def _datastore_models_ok(module: str) -> bool:
    mod = importlib.import_module(module)
    model = mod.LocalDatastoreModel(name="x", description="x")
    data = mod.DataModel(info={"a": 1}, ext=".nii.gz")
    return hasattr(model, "objects") and callable(model.label_path) and data.info == {"a": 1}
