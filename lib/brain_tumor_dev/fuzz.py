"""Schema-driven fuzzing of a live server: every operation answers bad requests with a 4xx.

Runs schemathesis (``st run``) against the server's ``/openapi.json`` with a fixed seed,
a bounded number of examples per operation and the ``not_a_server_error`` check, then
reads its NDJSON event log for the figures (operations, requests, status classes, every
5xx) and checks that the datastore is still consistent: ``datastore_v2.json`` parses,
every registered image and label file exists and reads, no temp or partial file was left,
and no file changed that a successful request did not target.

``brain-tumor-dev fuzz --examples 200`` does all of that on a fresh server over a copy of
the sample data; ``tests/server/test_fuzz_server.py`` runs a short version in the suite.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Datastore routes whose successful calls may change the files of the ids they name.
_MUTATING = {"PUT", "DELETE", "POST"}
_METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"}


@dataclass
class FuzzReport:
    """What one schemathesis run did and found."""

    seed: int
    examples: int
    seconds: float
    operations: list[str]
    requests: int
    per_operation: dict[str, int]
    status_classes: dict[str, int]
    server_errors: list[str] = field(default_factory=list)
    touched_ids: list[str] = field(default_factory=list)
    exit_code: int = 0


def schemathesis_command(url: str, examples: int, seed: int, events: Path) -> list[str]:
    """The ``st run`` command line (the documented long run uses the same one)."""
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        raise RuntimeError("schemathesis is not installed in this environment: run ./dev.sh setup")
    return [
        str(st), "run", f"{url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", str(examples),
        "--seed", str(seed),
        "--workers", "1",
        "--request-timeout", "120",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--warnings", "off",
        "--no-color",
        "--report", "ndjson",
        "--report-ndjson-path", str(events),
    ]  # fmt: skip


def run_schemathesis(url: str, examples: int, seed: int, workdir: Path, timeout: float = 1800) -> FuzzReport:
    """Fuzz every operation of the server at ``url``; the figures come from the event log."""
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "events.ndjson"
    start = time.monotonic()
    proc = subprocess.run(
        schemathesis_command(url, examples, seed, events),
        cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - start
    (workdir / "schemathesis.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if not events.is_file():
        raise RuntimeError(f"schemathesis wrote no event log (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    report = parse_events(events, seed, examples, seconds)
    report.exit_code = proc.returncode
    return report


def _body(response: dict[str, Any]) -> Any:
    content = response.get("content")
    raw = base64.b64decode(content["$base64"]) if isinstance(content, dict) and "$base64" in content else content
    if not isinstance(raw, (str, bytes)) or not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None


def _ids(request: dict[str, Any], response: dict[str, Any]) -> set[str]:
    """Image ids a successful datastore request targeted (query parameters, answer's ``image``)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.get("uri", "")).query)
    ids = {v for key in ("image", "id", "label") for v in query.get(key, [])}
    body = _body(response)
    if isinstance(body, dict) and isinstance(body.get("image"), str):
        ids.add(body["image"])
    return ids


def parse_events(events: Path, seed: int, examples: int, seconds: float) -> FuzzReport:
    """Count operations, requests and status classes; list every 5xx and the ids changed."""
    per_op: collections.Counter[str] = collections.Counter()
    classes: collections.Counter[str] = collections.Counter()
    operations: set[str] = set()
    errors, touched = [], set()
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder", {})
        label = recorder.get("label", "?")
        if label.split()[0] in _METHODS:  # "Stateful tests" scenarios chain several operations
            operations.add(label)
        for interaction in recorder.get("interactions", {}).values():
            request, response = interaction.get("request", {}), interaction.get("response") or {}
            status = int(response.get("status_code", 0))
            per_op[label] += 1
            classes[f"{status // 100}xx" if status else "no answer"] += 1
            if status >= 500 or not status:
                errors.append(f"{label}: {status} for {request.get('method')} {request.get('uri')}")
            on_datastore = urllib.parse.urlsplit(request.get("uri", "")).path.startswith("/datastore")
            if 200 <= status < 300 and request.get("method") in _MUTATING and on_datastore:
                touched |= _ids(request, response)
    return FuzzReport(
        seed=seed, examples=examples, seconds=round(seconds, 1), operations=sorted(operations),
        requests=sum(per_op.values()), per_operation=dict(sorted(per_op.items())),
        status_classes=dict(sorted(classes.items())), server_errors=errors, touched_ids=sorted(touched),
    )  # fmt: skip


def snapshot(studies: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file but the datastore's own state."""
    out = {}
    for p in sorted(studies.rglob("*")):
        if p.is_file() and p.name not in ("datastore_v2.json", ".lock"):
            st = p.stat()
            out[str(p.relative_to(studies))] = (st.st_size, st.st_mtime_ns)
    return out


def _readable(path: Path) -> str | None:
    """None if ``path`` reads as an image, else why not."""
    from brain_tumor_mri.imageio import load_volume
    from brain_tumor_mri.layout import IMAGE_EXTS_2D

    try:
        if path.name.lower().endswith(IMAGE_EXTS_2D):
            from PIL import Image

            with Image.open(path) as img:
                img.verify()
        else:
            load_volume(path)
    except Exception as exc:  # any failure to read counts as unreadable; reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return None


def _id_of(rel: str) -> str:
    from brain_tumor_mri.layout import split_image_name

    parts = Path(rel).parts
    return parts[1] if parts[0] == "cases" and len(parts) > 2 else split_image_name(parts[-1])[0]


def datastore_problems(studies: Path, before: dict[str, tuple[int, int]], touched: set[str]) -> list[str]:
    """Everything inconsistent in ``studies`` after a run (empty list: consistent)."""
    try:
        objects = json.loads((studies / "datastore_v2.json").read_text(encoding="utf-8"))["objects"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"datastore_v2.json unreadable: {exc}"]
    problems = []
    for image_id, obj in objects.items():
        files = [studies / f"{image_id}{obj['image']['ext']}"]
        files += [studies / "labels" / tag / f"{image_id}{lab['ext']}" for tag, lab in obj.get("labels", {}).items()]
        for path in files:
            why = "missing" if not path.is_file() else _readable(path)
            if why:
                problems.append(f"registered {path.relative_to(studies)}: {why}")
    after = snapshot(studies)
    for rel in after:
        name = Path(rel).name
        if (name.startswith(".") and name != ".lock") or ".partial" in name or ".tmp" in name:
            problems.append(f"stray temporary file {rel}")
    for rel, stamp in before.items():
        if _id_of(rel) not in touched and after.get(rel) != stamp:
            problems.append(f"{rel} {'removed' if rel not in after else 'changed'} though no request targeted it")
    return problems


def temp_files(folder: Path) -> set[str]:
    """Files under ``folder`` (the server's temp dir), relative names."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=int, default=200, help="examples per operation (default 200)")
    p.add_argument("--seed", type=int, default=20261122, help="schemathesis seed (default 20261122)")
    p.add_argument("--out", type=Path, default=None, help="keep the event log, output and report here")


def run(args: argparse.Namespace) -> int:
    """Fuzz a fresh server over a copy of the sample data; print the figures; 1 on any problem."""
    from brain_tumor_mri.data.importers import import_dataset

    from .server_process import REPO, Server, copy_studies, isolated_env

    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = Path(tmp)
        import_dataset(REPO / "sample-data", work / "imported", unlabelled=4)
        studies = copy_studies(work / "imported", work / "studies")
        env = isolated_env(work)
        server_tmp = work / "tmp"
        srv = Server(studies, {"models": "all"}, env=env)
        try:
            srv.wait_ready()
            before, temp_before = snapshot(studies), temp_files(server_tmp)
            report = run_schemathesis(srv.url, args.examples, args.seed, args.out or work / "report")
            alive = srv.alive() and bool(srv.client.info())
            problems = datastore_problems(studies, before, set(report.touched_ids))
            leftovers = sorted(temp_files(server_tmp) - temp_before)
        finally:
            srv.stop()
    summary = {**asdict(report), "server_alive": alive, "datastore_problems": problems, "temp_leftovers": leftovers}
    if args.out:
        (args.out / "report.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("fuzz report:\n%s", json.dumps(summary, indent=2))
    ok = not report.server_errors and alive and not problems and not leftovers
    return 0 if ok else 1
