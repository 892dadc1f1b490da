"""The upload guard, driven as ASGI: 413 before the body is stored, temp files gone, no server paths."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from brain_tumor_mri.server import uploads
from brain_tumor_mri.server.uploads import UploadGuard, UploadNames, client_file_name, scrub

LIMIT = 1000


def _run(guard, body_chunks, headers=()):
    """One request through ``guard``; returns (status, body, number of body chunks the app pulled)."""
    sent: list[dict] = []
    chunks = list(body_chunks)
    pulled = [0]

    async def receive():
        if pulled[0] < len(chunks):
            pulled[0] += 1
            return {"type": "http.request", "body": chunks[pulled[0] - 1], "more_body": pulled[0] < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/infer/x", "headers": list(headers), "query_string": b""}
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled[0]


class App:
    """A stand-in endpoint: reads the body, writes it to a temp file like MONAI Label, then answers."""

    def __init__(self, fail_with: str | None = None) -> None:
        self.fail_with = fail_with
        self.temp_files: list[Path] = []
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name  # never removed by the app
        Path(path).write_bytes(body)
        self.temp_files.append(Path(path))
        if self.fail_with == "exception":
            raise RuntimeError("boom")
        status = 422 if self.fail_with == "422" else 200
        detail = {"detail": f"cannot read image ({Path(path).name}: not a gzip file at {path})"}
        payload = json.dumps(detail if status == 422 else {"ok": True}).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def guard_for(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "gettempdir", uploads.request_aware_gettempdir)
    root = tmp_path / "requests"
    root.mkdir()

    def make(app):
        return UploadGuard(app, LIMIT, root, [str(tmp_path / "studies"), str(root)]), root

    return make


def test_content_length_over_the_limit_is_refused_before_the_app_runs(guard_for):
    app = App()
    guard, root = guard_for(app)
    status, body, pulled = _run(guard, [b"x" * 2000], [(b"content-length", b"2000")])
    assert status == 413 and pulled == 0 and not app.called
    assert "upload too large" in body.decode() and "max_upload_mb" in body.decode()


def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit(guard_for):
    app = App()
    guard, root = guard_for(app)
    status, body, pulled = _run(guard, [b"x" * 400] * 10)  # no content-length: chunked
    assert status == 413, body
    assert pulled == 3, "the app went on reading after the limit"
    assert app.called and not app.temp_files, "the oversized body was stored"
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("outcome", ["ok", "422", "exception"])
def test_temp_files_are_removed_whatever_the_outcome(guard_for, outcome):
    app = App(fail_with=None if outcome == "ok" else outcome)
    guard, root = guard_for(app)
    if outcome == "exception":
        with pytest.raises(RuntimeError):
            _run(guard, [b"abc"])
    else:
        _run(guard, [b"abc"])
    assert app.temp_files and app.temp_files[0].parent.parent == root  # it was in the request's folder
    assert not app.temp_files[0].exists() and list(root.iterdir()) == []


def test_error_messages_name_the_client_file_and_no_server_path(guard_for):
    app = App(fail_with="422")
    guard, root = guard_for(app)
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="C:\\\\scans\\\\flair.nii.gz"\r\n'
    part += b"\r\nxyz\r\n--b--"
    status, body, _ = _run(guard, [part[:30], part[30:]])
    detail = json.loads(body)["detail"]
    assert status == 422
    assert detail == "cannot read image (flair.nii.gz: not a gzip file at flair.nii.gz)", detail
    assert str(root) not in detail and "tmp" not in detail


def test_each_request_has_its_own_folder(guard_for):
    seen = []

    async def app(scope, receive, send):
        seen.append(tempfile.gettempdir())
        await asyncio.sleep(0.01)
        seen.append(tempfile.gettempdir())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard, root = guard_for(app)

    async def two():
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            return None

        await asyncio.gather(guard(dict(scope), receive, send), guard(dict(scope), receive, send))

    asyncio.run(two())
    assert len(set(seen)) == 2 and all(Path(s).parent == root for s in seen)
    assert tempfile.gettempdir() != seen[0]  # outside a request: the usual folder


def test_upload_names_across_chunk_boundaries():
    names = UploadNames()
    data = b'xx\r\nContent-Disposition: form-data; name="label"; filename="seg one.nrrd"\r\n' + b"\0" * 5000
    data += b'\r\nCONTENT-DISPOSITION: form-data; name="file"; filename="../../etc/x.nii"\r\n'
    for i in range(0, len(data), 7):
        names.feed(data[i : i + 7])
    assert names.names == ["seg one.nrrd", "x.nii"]


def test_scrub_cuts_server_paths_and_keeps_ordinary_words(tmp_path):
    studies = str(tmp_path / "studies")
    text = f"t1c ({studies}/cases/c1/t1c.nii.gz): affine differs; see /usr/share/x"
    assert scrub(text, [], [], [studies]) == "t1c (t1c.nii.gz): affine differs; see /usr/share/x"
    assert client_file_name("a/b\\c\x00.nii") == "c.nii" and client_file_name("") == "upload"


def test_tempfile_still_asks_gettempdir():
    assert uploads.request_temp_dirs_work()


def test_a_process_removes_its_request_root_when_it_exits(tmp_path):
    """A server that stops leaves no ``brain-tumor-requests-PID`` folder in the temp folder."""
    code = (
        "from brain_tumor_mri.server.uploads import install_request_temp_dirs; "
        "root = install_request_temp_dirs(); (root / 'req-1').mkdir(); print(root)"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    root = Path(out.stdout.strip())
    assert root.parent == tmp_path and root.name.startswith("brain-tumor-requests-")
    assert list(tmp_path.iterdir()) == []
