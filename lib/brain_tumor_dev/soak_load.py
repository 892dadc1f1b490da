"""The mixed load of a soak run: two annotators, a stream of bad inputs, one training run.

Each worker drives a real server through ``MONAILabelClient`` (as Slicer does) or plain
HTTP for the malformed requests, and records every answer; nothing is asserted in a worker
thread — the caller reads the records after joining the threads.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from monailabel.client import MONAILabelClient

from brain_tumor_mri.imageio import load_volume, save_label

LABEL_INFO = {"label_info": [{"name": "necrotic_core", "idx": 1}, {"name": "edema", "idx": 2}]}


@dataclass
class Record:
    """What the load did: answers by (kind, status), unexpected answers, accepted labels."""

    answers: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    accepted: dict[str, list[np.ndarray]] = field(default_factory=dict)  # case -> accepted label arrays in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, status: int, expected: tuple[int, ...], detail: str = "") -> None:
        with self.lock:
            self.answers[(kind, status)] += 1
            if status not in expected:
                self.unexpected.append(f"{kind} -> {status}: {detail[:300]}")

    def accept(self, case_id: str, label: np.ndarray) -> None:
        with self.lock:
            self.accepted.setdefault(case_id, []).append(label)


@dataclass
class Load:
    """One soak's load against ``url``; ``tokens`` maps a role to a bearer token when auth is on."""

    url: str
    studies: Path
    workdir: Path
    deadline: float
    tokens: dict[str, str] = field(default_factory=dict)
    record: Record = field(default_factory=Record)
    training: threading.Event = field(default_factory=threading.Event)  # the load goes on while it is set
    hard_deadline: float = float("inf")

    def running(self) -> bool:
        now = time.monotonic()
        return now < self.hard_deadline and (now < self.deadline or self.training.is_set())

    def client(self, name: str, role: str) -> MONAILabelClient:
        folder = self.workdir / f"client-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        client = MONAILabelClient(self.url, tmpdir=str(folder), client_id=name)
        if role in self.tokens:
            client.update_auth({"token_type": "Bearer", "access_token": self.tokens[role]})
        return client

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role in self.tokens else {}

    def annotate(self, name: str, seed: int) -> None:
        """Next Sample (or a labelled case once the pool is empty) -> infer -> correct -> save."""
        client, rng = self.client(name, "annotator"), random.Random(seed)
        while self.running():
            try:
                case_id = client.next_sample("random", {}).get("id")
                self.record.note("next_sample", 200, (200,))
                if not case_id:
                    case_id = rng.choice(sorted(p.name[: -len(".nii.gz")] for p in self.labelled()))
                path, params = client.infer("segmentation", case_id, {"result_extension": ".nii.gz"})
                self.record.note("infer", 200, (200,))
                data, affine = load_volume(path)
                label = np.rint(data).astype(np.uint8)
                label[label == 3] = 2
                box = rng.randrange(0, 20)
                label[box : box + 6, box : box + 6, box : box + 6] = 1  # the "correction"
                out = save_label(self.workdir / f"{name}-label.nii.gz", label, affine)
                client.save_label(case_id, str(out), "final", dict(LABEL_INFO))
                self.record.note("save_label", 200, (200,))
                self.record.accept(case_id, label)
            except Exception as exc:  # recorded for the caller; the load goes on
                self.record.note("annotator", -1, (200,), repr(exc))
                time.sleep(0.5)

    def labelled(self) -> list[Path]:
        return sorted((self.studies / "labels" / "final").glob("*.nii.gz"))

    def bad_inputs(self) -> None:
        """Malformed uploads and ids: each must get its 4xx and leave nothing behind."""
        good = gzip.compress(b"\0" * 352, compresslevel=1)
        cases: list[tuple[str, str, str, dict[str, Any], int]] = [
            (
                "bad_infer_upload",
                "POST",
                "/infer/segmentation",
                {"files": {"file": ("scan.nii.gz", b"\0junk" * 99)}},
                422,
            ),
            (
                "bad_add_image",
                "PUT",
                "/datastore/",
                {"params": {"image": "junk"}, "files": {"file": ("j.nii.gz", good)}},
                422,
            ),  # fmt: skip
            (
                "bad_label",
                "PUT",
                "/datastore/label",
                {"params": {"image": "nosuchcase", "tag": "final"}, "files": {"label": ("l.nii.gz", b"x")}},
                404,
            ),  # fmt: skip
            (
                "path_in_id",
                "PUT",
                "/datastore/label",
                {"params": {"image": "../x", "tag": "final"}, "files": {"label": ("l.nii.gz", b"x")}},
                422,
            ),  # fmt: skip
        ]
        roles = {"bad_add_image": "admin"}
        while self.running():
            for kind, method, path, kw, status in cases:
                try:
                    r = requests.request(method, self.url + path, headers=self.headers(roles.get(kind, "annotator")),
                                         data={"params": "{}"}, timeout=120, **kw)  # fmt: skip
                    self.record.note(kind, r.status_code, (status,), r.text)
                except requests.RequestException as exc:
                    self.record.note(kind, -1, (status,), repr(exc))
            time.sleep(0.5)

    def train(self, model: str, epochs: int, timeout: float) -> None:
        """Run one training run (admin) to its end; a run that has not ended by ``timeout`` is recorded."""
        self.training.set()
        try:
            self.client("trainer", "admin").train_start(model, {"max_epochs": epochs})
            self.record.note("train_start", 200, (200,))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                task = requests.get(f"{self.url}/train/", headers=self.headers("admin"), timeout=30).json()
                if task and task.get("status") in ("DONE", "ERROR", "STOPPED"):
                    self.record.note("train_done", 200 if task["status"] == "DONE" else 500, (200,), str(task)[-500:])
                    return
                time.sleep(2)
            self.record.note("train_done", -1, (200,), f"training still running after {timeout:.0f}s")
        except Exception as exc:  # recorded for the caller
            self.record.note("train", -1, (200,), repr(exc))
        finally:
            self.training.clear()
