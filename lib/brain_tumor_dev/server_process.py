"""Runs a real ``monailabel start_server`` process on a free loopback port.

Shared by the server-level tests and the benchmark, so both exercise the exact server a
user starts, driven through ``MONAILabelClient`` as the Slicer extension does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from monailabel.client import MONAILabelClient

REPO = Path(__file__).resolve().parents[2]  # lib/brain_tumor_mri/ -> repository root
APP = REPO / "apps" / "brain_tumor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running server process and a client bound to it."""

    def __init__(
        self,
        studies: Path,
        conf: dict[str, str] | None = None,
        log: Path | None = None,
        weights_dir: Path | None = None,
        env: dict[str, str] | None = None,
        studies_arg: str | None = None,
    ) -> None:
        """``studies`` is the local datastore folder; ``studies_arg`` a different ``--studies`` value
        (a DICOMweb URL, whose cache folder ``studies`` then is via ``--conf pacs_cache``)."""
        self.studies = studies
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or studies.parent / f"server-{self.port}.log"
        args = [
            sys.executable,
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(APP),
            "--studies",
            studies_arg or str(studies),
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        for k, v in (conf or {"models": "all"}).items():
            args += ["--conf", k, v]
        weights = weights_dir or os.environ.get("BRAIN_TUMOR_WEIGHTS_DIR") or REPO / "model_weights"
        # MONAI Label writes a logging config to the temp folder at each start and never removes it: unless the
        # caller chose a temp folder, the server gets one beside its studies, not the machine's /tmp
        chose_tmp = "TMPDIR" in (env or {})
        env = {
            **os.environ,
            "BRAIN_TUMOR_WEIGHTS_DIR": str(weights),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        if not chose_tmp:
            own_tmp = studies.parent / "server-tmp"
            own_tmp.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(own_tmp)
        self._log = open(self.log_path, "wb")
        # own process group, so stop() also ends the training/scoring workers the server spawned
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), start_new_session=True
        )
        self.client = MONAILabelClient(self.url, tmpdir=str(studies.parent / "client"))
        os.makedirs(studies.parent / "client", exist_ok=True)

    def wait_ready(self, timeout: float = 180.0) -> dict:
        """Poll ``GET /info/`` until it answers; fail early if the process died."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.client.info()
            except Exception as exc:  # not up yet: retry until the deadline
                last = exc
                time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("VmHWM not available")

    def stop(self) -> None:
        """Terminate the server and everything it started; kill what does not exit in time."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # leftover workers (e.g. a scoring run) of a dead server
        self._log.close()


def isolated_env(work: Path) -> dict[str, str]:
    """Server environment whose temp files and sessions stay under ``work`` (``work/tmp`` is created).

    Scoring at start is off, so a test or tool sees only the requests it makes; checks that
    nothing was left behind then look at ``work/tmp`` alone.
    """
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    return {"TMPDIR": str(work / "tmp"), "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}  # fmt: skip


def copy_studies(src: Path, dst: Path) -> Path:
    """A fresh working copy of a datastore (never serve the original)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("datastore_v2.json", ".lock", "model"))
    return dst


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) for every file except the datastore's own state."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in ("datastore_v2.json", ".lock"):
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out
