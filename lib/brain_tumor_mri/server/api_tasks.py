"""Validating twins of MONAI Label's task endpoints: infer, next sample, train, scoring, sessions, logs.

Names in the path (model, strategy, scoring method) must be ones this server has (404
listing the known ones); JSON fields must parse; long jobs (training, scoring) never run
inside a request (``run_sync`` is refused); training options are parsed and range-checked
by ``training.request`` before a run starts. Inference runs in a worker thread (MONAI
Label declares it ``async`` but computes synchronously, which froze the whole server);
the infer tasks' ``Admission`` bounds how many run and wait. Whole-slide and batch
inference, which this app cannot do, are hidden and answer a 404 saying so.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response
from monailabel.config import settings
from monailabel.endpoints import activelearning as ml_al
from monailabel.endpoints import infer as ml_infer
from monailabel.endpoints import logs as ml_logs
from monailabel.endpoints import scoring as ml_scoring
from monailabel.endpoints import session as ml_session
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from ..imageio import InputError
from ..training.request import MONAILABEL_REQUEST_KEYS, parse_train_request
from . import validation as v
from .api_datastore import known_image
from .compat import has_params, requires
from .handlers import monailabel_errors
from .route_table import Route, Unsupported, register_routes

logger = logging.getLogger(__name__)

USER = settings.MONAI_LABEL_AUTH_ROLE_USER
ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN

_WSI = "whole-slide (pathology) inference is not offered: this app serves 3D brain MRI; use POST /infer/{model}"
_BATCH = (
    "batch inference is not offered: this app's results are not stored in the datastore; "
    "segment many cases with the `brain-tumor segment` command"
)
UNSUPPORTED = [
    Unsupported("POST", "/infer/wsi/{model}", _WSI),
    Unsupported("POST", "/infer/wsi_v2/{model}", _WSI),
    Unsupported("GET", "/batch/infer", _BATCH),
    Unsupported("POST", "/batch/infer/{model}", _BATCH),
    Unsupported("DELETE", "/batch/infer", _BATCH),
]
ROUTES = [
    ("POST", "/infer/{model}"),
    ("POST", "/activelearning/{strategy}"),
    ("POST", "/train/{model}"),
    ("POST", "/train/"),
    ("POST", "/scoring/{method}"),
    ("POST", "/scoring/"),
    ("PUT", "/session/"),
    ("GET", "/session/{session_id}"),
    ("DELETE", "/session/{session_id}"),
    ("GET", "/logs/"),
    ("GET", "/logs/gpu"),
] + [(u.method, u.path) for u in UNSUPPORTED]
register_routes("server.api_tasks", ROUTES)
for _mod, _fn, *_params in (
    ("activelearning", "sample", "strategy", "params", "user"),
    ("train", "run_model", "model", "params", "run_sync", "enqueue"),
    ("train", "run", "params", "run_sync"),
    ("scoring", "run_method", "method", "params", "run_sync"),
    ("scoring", "run", "params", "run_sync"),
    ("session", "create_session", "background_tasks", "uncompress", "expiry", "files"),
    ("session", "get_session", "session_id", "update_ts", "image"),
    ("session", "remove_session", "session_id"),
    ("logs", "get_logs", "logger_file", "lines", "html", "text", "refresh"),
):
    _where = f"monailabel.endpoints.{_mod}"
    requires(f"endpoint {_where}.{_fn}({', '.join(_params)})", "server.api_tasks", has_params(_where, _fn, *_params))

#: most log lines ``GET /logs/`` answers with (0 or less: the whole file)
MAX_LOG_LINES = 1_000_000
#: how long ``GET /logs/gpu`` waits for nvidia-smi
NVIDIA_SMI_TIMEOUT_S = 30


def _served(ctx: Any, kind: str) -> tuple[str, ...]:
    return tuple(ctx.served.get(kind, ()))


def _is_dicomweb(datastore: Any) -> bool:
    from monailabel.datastore.dicom import DICOMWebDatastore

    return isinstance(datastore, DICOMWebDatastore)


def known_session(session_id: str) -> Any:
    """The session ``session_id`` (422 malformed, 404 unknown, 406 when sessions are off)."""
    v.case_id("session id", session_id)
    sessions = app_instance().sessions()
    if sessions is None:
        raise HTTPException(status_code=406, detail="sessions are not enabled on this server")
    info = sessions.get_session(session_id, update_ts=False)
    if info is None:
        raise v.not_found(f"session {session_id!r} not found (expired or never created)")
    return info


def check_infer_request(
    params: dict[str, Any], image: str, session_id: str, file: UploadFile | None, label: UploadFile | None, output: Any
) -> None:
    """Everything an infer request must satisfy before the model is asked."""
    v.infer_params(params)
    if label is not None:
        raise v.unprocessable("label: the models of this app take no input label; send only the image")
    if output is not None and output.value == "dicom_seg" and not _is_dicomweb(app_instance().datastore()):
        raise v.unprocessable("output: dicom_seg answers need a DICOMweb datastore; use image, json or all")
    if file is not None:
        v.upload_extension("file", file.filename)
    elif session_id:
        known_session(session_id)
    elif image:
        known_image(image)
    else:
        raise v.unprocessable("give image (a datastore id), file (an upload) or session_id")


def infer_route(ctx: Any) -> Any:
    def infer(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: ml_infer.ResultType | None = None,
        user: User = Depends(RBAC(USER)),
    ) -> Any:
        """Run a model on a datastore image, an uploaded file or a session's image (in a worker thread)."""
        v.known_name("model", model, _served(ctx, "model"))
        check_infer_request(v.json_object("params", params), image, session_id, file, label, output)
        with monailabel_errors():
            return ml_infer.run_inference(background_tasks, model, image, session_id, params, file, None, output)

    return infer


def next_sample_route(ctx: Any) -> Any:
    def next_sample(strategy: str, params: dict | None = None, user: User = Depends(RBAC(USER))) -> Any:
        """The next case to annotate by ``strategy`` ({} when none is left)."""
        v.known_name("strategy", strategy, _served(ctx, "strategy"))
        with monailabel_errors():
            return ml_al.sample(strategy, params, user.username)

    return next_sample


def _train_options(model: str, params: Any) -> None:
    try:
        parse_train_request(model, params)
    except InputError as exc:
        raise v.unprocessable(str(exc)) from None


def _per_model_options(params: dict | None, kind: str, names: tuple[str, ...], what: str) -> dict[str, dict[str, Any]]:
    """``{name: options}`` for every served name from a run-all body; a body is required.

    A body-less POST to a run-all route would start every model's job; Slicer always sends
    a JSON object (at least its ``client_id``), so only scripts and probes send none.
    """
    if params is None:
        raise v.unprocessable(f"params: {what} needs a JSON body: {{model: {{option: value}}}} ({{}} for defaults)")
    bookkeeping = {k: val for k, val in params.items() if k in MONAILABEL_REQUEST_KEYS}
    for key in params:
        if key not in bookkeeping:
            v.known_name(kind, key, names)
    return {n: {**bookkeeping, **_as_options(n, params.get(n))} for n in names}


def _as_options(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise v.unprocessable(f"params: options for {name!r} must be a JSON object")
    return value


def train_routes(ctx: Any) -> tuple[Any, Any]:
    def train_model(
        model: str,
        params: dict | None = None,
        run_sync: bool | None = False,
        enqueue: bool | None = False,
        user: User = Depends(RBAC(ADMIN)),
    ) -> Any:
        """Start training ``model`` in the background (options checked before the run starts)."""
        v.known_name("trainer", model, _served(ctx, "trainer"))
        v.no_run_sync(run_sync, "training", "/train/")
        _train_options(model, params)
        with monailabel_errors():
            return ml_train.run_model(model, params, False, enqueue)

    def train_all(params: dict | None = None, run_sync: bool | None = False, user: User = Depends(RBAC(ADMIN))) -> Any:
        """Queue training of every model; ``params`` is ``{model: {option: value}}`` (Slicer's "ALL")."""
        v.no_run_sync(run_sync, "training", "/train/")
        options = _per_model_options(params, "trainer", _served(ctx, "trainer"), "training every model")
        for model, opts in options.items():
            _train_options(model, opts)
        started = {}
        with monailabel_errors():  # one queued run per model with only its own options (MONAI Label mixes all in)
            for model, opts in options.items():
                started[model] = {"result": ml_train.run_model(model, opts, False, True), "detail": None}
        return started

    return train_model, train_all


def scoring_routes(ctx: Any) -> tuple[Any, Any]:
    def score(
        method: str, params: dict | None = None, run_sync: bool | None = False, user: User = Depends(RBAC(ANNOTATOR))
    ) -> Any:
        """Start one scoring method over the unlabelled cases, in the background."""
        v.known_name("scoring method", method, _served(ctx, "scoring"))
        v.no_run_sync(run_sync, "scoring", "/scoring/")
        with monailabel_errors():
            return ml_scoring.run_method(method, params, False)

    def score_all(
        params: dict | None = None, run_sync: bool | None = False, user: User = Depends(RBAC(ANNOTATOR))
    ) -> Any:
        """Start every scoring method in the background; ``params`` is ``{method: {option: value}}``."""
        v.no_run_sync(run_sync, "scoring", "/scoring/")
        _per_model_options(params, "scoring method", _served(ctx, "scoring"), "scoring with every method")
        with monailabel_errors():
            return ml_scoring.run(params, False)

    return score, score_all


def create_session(
    background_tasks: BackgroundTasks,
    uncompress: bool = False,
    expiry: int = 0,
    files: list[UploadFile] = File(...),
    user: User = Depends(RBAC(USER)),
) -> Any:
    """Keep uploaded image file(s) on the server for later inference (no archives)."""
    if uncompress:
        raise v.unprocessable("uncompress: archives are not accepted; upload the image file(s) themselves")
    if expiry < 0:
        raise v.unprocessable(f"expiry: {expiry} must be 0 (server default) or a number of seconds")
    for f in files:
        v.upload_extension("files", f.filename)
    with monailabel_errors():
        return ml_session.create_session(background_tasks, False, expiry, files)


def get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = Depends(RBAC(USER))) -> Any:
    """A session's details, or its image file (single-file sessions)."""
    info = known_session(session_id)
    if image and os.path.isdir(info.image):
        raise v.unprocessable("image: this session holds several files; only single-file sessions download")
    with monailabel_errors():
        return ml_session.get_session(session_id, update_ts, image)


def remove_session(session_id: str, user: User = Depends(RBAC(USER))) -> Any:
    """Delete a session and its files."""
    known_session(session_id)
    with monailabel_errors():
        return ml_session.remove_session(session_id)


def get_logs(
    lines: int | None = Query(300, le=MAX_LOG_LINES),
    html: bool | None = True,
    text: bool | None = False,
    refresh: int | None = Query(0, ge=0, le=3600),
    user: User = Depends(RBAC(ADMIN)),
) -> Any:
    """The server's log (its last ``lines`` lines; all when ``lines`` <= 0)."""
    path = os.path.join(settings.MONAI_LABEL_APP_DIR, "logs", "app.log")
    if not os.path.isfile(path):
        raise v.not_found("this server writes no log file")
    return ml_logs.get_logs(path, lines if lines is not None else 300, html, text, refresh)


def gpu_info(user: User = Depends(RBAC(ADMIN))) -> Any:
    """``nvidia-smi`` output; 404 on a server without NVIDIA tools."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise v.not_found("no NVIDIA GPU tools on this server (nvidia-smi not found)")
    try:
        out = subprocess.run([exe], capture_output=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise HTTPException(status_code=503, detail=f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT_S} s") from None
    return Response(content=out.stdout.decode("utf-8", "replace"), media_type="text/plain")


def routes(ctx: Any) -> list[Route]:
    """The task routes this module re-declares."""
    train_model, train_all = train_routes(ctx)
    score, score_all = scoring_routes(ctx)
    named = "404 for an unknown name"
    return [
        Route("POST", "/infer/{model}", infer_route(ctx), f"{named}; params/result format/ids checked; worker thread"),
        Route("POST", "/activelearning/{strategy}", next_sample_route(ctx), named),
        Route("POST", "/train/{model}", train_model, f"{named}; options range-checked; no run_sync"),
        Route("POST", "/train/", train_all, "options of every model range-checked; no run_sync"),
        Route("POST", "/scoring/{method}", score, f"{named}; no run_sync"),
        Route("POST", "/scoring/", score_all, "no run_sync"),
        Route("PUT", "/session/", create_session, "no archives (unpacking untrusted archives is unsafe); file types"),
        Route("GET", "/session/{session_id}", get_session, "404 unknown session; 422 image of a multi-file session"),
        Route("DELETE", "/session/{session_id}", remove_session, "checked session id"),
        Route("GET", "/logs/", get_logs, "no server path in its 404"),
        Route("GET", "/logs/gpu", gpu_info, "404 without nvidia-smi; bounded wait"),
    ]
