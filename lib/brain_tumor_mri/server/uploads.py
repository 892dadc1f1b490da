"""Request-scoped temp files, an upload size limit, and error messages free of server paths.

MONAI Label's endpoints write each upload to ``tempfile.NamedTemporaryFile(delete=False)``
and remove it in a background task that runs only when the request succeeds; a rejected
upload (422) or a failed inference leaves its file behind for good, so a client can fill
the disk with bad requests. Its messages also name those temp files (``tmpf5pl7j8p.nii.gz``).

``UploadGuard`` wraps the whole server (every route, whoever declared it) and, per request:

* refuses a body larger than ``max_bytes`` with 413: at once from ``Content-Length``, or as
  soon as the running count of a chunked body passes it, before the upload is complete;
* gives the request its own temp folder — ``tempfile.gettempdir()`` answers that folder
  while the request runs (a context variable, so it follows the request into worker
  threads and background tasks and no other request sees it) — and removes the folder
  when the request is over, whether it succeeded or failed;
* rewrites error answers so they name an upload by the file name the client sent and any
  other server file by its base name only.
"""

from __future__ import annotations

import atexit
import contextvars
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .asgi import ASGIApp, Message, Receive, Scope, Send, header, send_json

logger = logging.getLogger(__name__)

#: Error bodies longer than this are passed on unchanged (ours are a line or two).
MAX_REWRITTEN_BODY = 256 * 1024
_ROOT_PREFIX = "brain-tumor-requests-"


class RequestDir:
    """One request's temp folder, created on first use and removed with everything in it."""

    _ids = itertools.count(1)

    def __init__(self, root: Path) -> None:
        self.path = root / f"req-{next(self._ids)}"
        self._made = False

    def ensure(self) -> str:
        if not self._made:
            self.path.mkdir(parents=True, exist_ok=True)
            self._made = True
        return str(self.path)

    def files(self) -> list[Path]:
        """Named files the request left here, oldest first."""
        if not self._made or not self.path.is_dir():
            return []
        found = [p for p in self.path.rglob("*") if p.is_file()]
        return sorted(found, key=lambda p: (p.stat().st_ctime_ns, p.name))

    def remove(self) -> None:
        if self._made:
            shutil.rmtree(self.path, ignore_errors=True)


_CURRENT_DIR: contextvars.ContextVar[RequestDir | None] = contextvars.ContextVar(
    "brain_tumor_request_dir", default=None
)


_SYSTEM_GETTEMPDIR = tempfile.gettempdir


def system_temp_dir() -> str:
    """The process's usual temp folder (``$TMPDIR`` or the platform default), never a request's."""
    return _SYSTEM_GETTEMPDIR()


def request_aware_gettempdir() -> str:
    """Installed as ``tempfile.gettempdir``: the current request's folder, else the usual one.

    Every ``tempfile`` function that is not given ``dir=`` (``NamedTemporaryFile``, ``mkstemp``,
    ``mkdtemp``, ``TemporaryFile``, ``SpooledTemporaryFile``...) asks ``gettempdir()``, so the
    files MONAI Label and Starlette make for a request land in its folder; ``compat`` checks at
    start that this still holds.
    """
    current = _CURRENT_DIR.get()
    return current.ensure() if current is not None else _SYSTEM_GETTEMPDIR()


def install_request_temp_dirs() -> Path:
    """Route ``tempfile`` into per-request folders; returns this process's root of them.

    The root goes when the process exits normally (a stopped server left an empty folder per
    start); roots left by earlier server processes that are gone (killed, crashed) are removed.
    """
    default = system_temp_dir()
    for stale in Path(default).glob(f"{_ROOT_PREFIX}*"):
        pid = stale.name[len(_ROOT_PREFIX) :]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    root = Path(default) / f"{_ROOT_PREFIX}{os.getpid()}"
    root.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tempfile.gettempdir = request_aware_gettempdir
    return root


def request_temp_dirs_work() -> bool:
    """Whether ``tempfile`` puts files in the request's folder this way (checked by ``compat`` at start)."""
    saved = tempfile.gettempdir
    probe_root = Path(tempfile.mkdtemp(prefix="brain-tumor-probe-"))
    try:
        tempfile.gettempdir = request_aware_gettempdir
        request_dir = RequestDir(probe_root)
        token = _CURRENT_DIR.set(request_dir)
        try:
            with tempfile.NamedTemporaryFile() as f, tempfile.SpooledTemporaryFile(max_size=1) as g:
                g.write(b"xx")  # rolls over to a real file in the request folder
                return Path(f.name).parent == request_dir.path and request_dir.path.is_dir()
        finally:
            _CURRENT_DIR.reset(token)
    finally:
        tempfile.gettempdir = saved
        shutil.rmtree(probe_root, ignore_errors=True)


_FILENAME = re.compile(rb'content-disposition:[^\r\n]*?filename="([^"\r\n]*)"', re.IGNORECASE)


class UploadNames:
    """File names the client gave its multipart parts, read from the body as it streams past."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._tail = b""
        self._offset = 0  # absolute position of self._tail[0]
        self._seen_until = -1

    def feed(self, chunk: bytes) -> None:
        buf = self._tail + chunk
        for m in _FILENAME.finditer(buf):
            if self._offset + m.start() > self._seen_until:
                self.names.append(client_file_name(m.group(1).decode("utf-8", "replace")))
                self._seen_until = self._offset + m.start()
        keep = buf[-1024:]
        self._offset += len(buf) - len(keep)
        self._tail = keep


def client_file_name(name: str) -> str:
    """A client-sent file name fit to quote back: base name, printable, at most 128 characters."""
    base = re.split(r"[\\/]", name)[-1]
    clean = "".join(c for c in base if c.isprintable()).strip()
    return clean[:128] or "upload"


def scrub(text: str, request_files: Sequence[Path], uploads: Sequence[str], roots: Sequence[str]) -> str:
    """``text`` with the request's temp files named as the client named them, other server paths cut to base names."""
    if len(request_files) == len(uploads):
        pairs = list(zip(request_files, uploads))
    else:
        shown = uploads[0] if len(uploads) == 1 else "the uploaded file"
        pairs = [(p, shown) for p in request_files]
    for path, shown in pairs:
        quoted = json.dumps(shown)[1:-1]
        for form in (str(path), path.name, path.name.split(".")[0]):
            if len(form) >= 6:  # never rewrite short fragments that could be ordinary words
                text = text.replace(form, quoted)
    for root in sorted({r.rstrip("/") for r in roots if r and r != "/"}, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"[^\s'\"`<>(){}\[\],;]*", lambda m: _base_name(m.group(0)), text)
    return text


def _base_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or "<server folder>"


class UploadTooLarge(Exception):
    """Raised into the app from ``receive`` when a streamed body passes the limit."""


class UploadGuard:
    """ASGI wrapper: size limit, per-request temp folder removed at the end, scrubbed error messages."""

    def __init__(self, app: ASGIApp, max_bytes: int, temp_root: Path, server_roots: Sequence[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.temp_root = temp_root
        self.server_roots = [str(r) for r in server_roots]

    def _too_large(self, size: int | None) -> str:
        limit = f"{self.max_bytes / 2**20:g} MB"
        got = f"{size / 2**20:.1f} MB" if size is not None else f"more than {limit}"
        return f"upload too large ({got}); this server accepts at most {limit} per request (setting max_upload_mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            logger.warning(
                "413: %s %s with %s bytes refused before reading", scope["method"], scope["path"], int(length)
            )
            await send_json(send, 413, self._too_large(int(length)))
            return
        request_dir = RequestDir(self.temp_root)
        token = _CURRENT_DIR.set(request_dir)
        try:
            await self._guarded(scope, receive, send, request_dir)
        finally:
            _CURRENT_DIR.reset(token)
            request_dir.remove()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, request_dir: RequestDir) -> None:
        names, received, over = UploadNames(), [0], [False]
        started, held = [False], _ErrorScrubber(self, request_dir, names, send)

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received[0] += len(chunk)
                names.feed(chunk)
                if received[0] > self.max_bytes:
                    over[0] = True
                    raise UploadTooLarge()
            return message

        async def checked_send(message: Message) -> None:
            if over[0]:
                return  # the app's own answer to the aborted body is replaced by 413 below
            started[0] = True
            await held.send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except Exception:
            if not over[0]:
                raise
        if over[0]:
            logger.warning("413: %s %s body passed %d bytes; aborted", scope["method"], scope["path"], self.max_bytes)
            if not started[0]:
                await send_json(send, 413, self._too_large(None))


class _ErrorScrubber:
    """Passes success answers through; holds an error answer until complete and scrubs it."""

    def __init__(self, guard: UploadGuard, request_dir: RequestDir, names: UploadNames, send: Send) -> None:
        self.guard, self.request_dir, self.names, self._send = guard, request_dir, names, send
        self.start: Message | None = None
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if int(message.get("status", 200)) < 400:
                await self._send(message)
                return
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self._send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False) and len(self.body) <= MAX_REWRITTEN_BODY:
            return
        await self._flush(message.get("more_body", False))

    async def _flush(self, more_body: bool) -> None:
        assert self.start is not None
        body = self.body
        if not more_body:
            text = body.decode("utf-8", "replace")
            roots = [*self.guard.server_roots, str(self.guard.temp_root)]
            body = scrub(text, self.request_dir.files(), self.names.names, roots).encode()
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        if not more_body:
            headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**self.start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        self.start, self.body = None, b""
