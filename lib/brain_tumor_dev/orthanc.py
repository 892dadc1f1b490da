"""Runs a real Orthanc PACS (Debian ``orthanc`` + ``orthanc-dicomweb``) for tests and benchmarks.

Each ``Orthanc`` gets a free HTTP port, its own storage and index folder and its own
configuration file; it answers loopback clients only (``RemoteAccessAllowed: false``; Orthanc
1.10 has no bind-address option) and opens no DICOM (DIMSE) port. ``start`` polls ``/system`` until the
server answers and checks that the DICOMweb plugin is loaded, so a test never runs against
a PACS without ``/dicom-web``. ``pause``/``resume`` freeze the process (SIGSTOP/SIGCONT) to
play a PACS that accepts connections but does not answer; ``stop`` plays one that is down.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import requests

from .server_process import free_port

PLUGIN_ENV = "ORTHANC_DICOMWEB_PLUGIN"
DEFAULT_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DEBIAN_PACKAGES = ("orthanc", "orthanc-dicomweb")


def orthanc_binary() -> str:
    """Path of the Orthanc executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    if not found:
        raise FileNotFoundError(
            f"Orthanc not found: install the Debian packages {' '.join(DEBIAN_PACKAGES)} (./dev.sh setup does)"
        )
    return found


def dicomweb_plugin() -> str:
    path = os.environ.get(PLUGIN_ENV, DEFAULT_PLUGIN)
    if not Path(path).is_file():
        raise FileNotFoundError(f"Orthanc DICOMweb plugin {path} not found: install orthanc-dicomweb")
    return path


class Orthanc:
    """One Orthanc process on 127.0.0.1 with a temporary storage folder."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = dict(users or {})
        self.base = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.base}/dicom-web"
        self.auth = next(iter(self.users.items())) if self.users else None
        self.config_path = self.root / "orthanc.json"
        self.log_path = self.root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict:
        """The Orthanc configuration this instance runs with."""
        storage = str(self.root / "storage")
        return {
            "Name": f"test-pacs-{self.port}",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.port,
            "HttpTimeout": 60,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full"},
            "SaveJobs": False,
            "StorageCompression": False,
        }

    def start(self, timeout: float = 60.0) -> Orthanc:
        """Start the process and wait until it answers with the DICOMweb plugin loaded."""
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [orthanc_binary(), str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.base}/system", auth=self.auth, timeout=2).ok:
                    break
            except requests.RequestException:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Orthanc did not answer within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        plugins = requests.get(f"{self.base}/plugins", auth=self.auth, timeout=10).json()
        if "dicom-web" not in plugins:
            self.stop()
            raise RuntimeError(f"Orthanc started without the DICOMweb plugin (plugins: {plugins})")
        return self

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel but never answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the process (resuming it first if paused); kill it if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files through Orthanc's REST API: one ZIP archive to ``POST /instances``."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for i, path in enumerate(files):
                archive.write(path, f"{i:06d}.dcm")
        r = requests.post(f"{self.base}/instances", data=buffer.getvalue(), auth=self.auth, timeout=120)
        r.raise_for_status()
        stored = r.json() if isinstance(r.json(), list) else [r.json()]
        if len(stored) != len(files):
            raise RuntimeError(f"Orthanc stored {len(stored)} of {len(files)} instances")

    def series_of_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS series of a study (DICOM JSON), straight from Orthanc."""
        r = requests.get(f"{self.dicomweb_url}/studies/{study_uid}/series", auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else []

    def instances_of_series(self, study_uid: str, series_uid: str) -> list[bytes]:
        """The Part 10 bytes of every instance of a series (via Orthanc's REST API)."""
        found = requests.post(
            f"{self.base}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}},
            auth=self.auth,
            timeout=30,
        )
        found.raise_for_status()
        return [
            requests.get(f"{self.base}/instances/{oid}/file", auth=self.auth, timeout=60).content
            for oid in found.json()
        ]
