"""Load and crash safety: bursts are answered or cleanly refused; SIGKILL mid-save is safe."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time

import nibabel as nib
import numpy as np
import pytest
import requests

from brain_tumor_mri.imageio import load_volume
from brain_tumor_mri.layout import list_cases

from .harness import Server, copy_studies

pytestmark = pytest.mark.server


def test_twenty_concurrent_inferences(server):
    case_id = next(c for c in list_cases(server.studies, kind="3d"))
    answers: list[tuple[int, str]] = []  # (status, body) of every request, checked in the main thread

    def one() -> None:
        try:
            r = requests.post(
                f"{server.url}/infer/segmentation",
                params={"image": case_id},
                data={"params": json.dumps({"result_extension": ".nrrd"})},
                timeout=600,
            )
            answers.append((r.status_code, r.text if r.status_code != 200 else ""))
        except requests.RequestException as exc:  # recorded, so the main thread sees it
            answers.append((-1, repr(exc)))

    rss_before = server.peak_rss_mb()
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    assert server.client.info()["models"]["segmentation"]  # still answering during the burst
    info_latency = time.monotonic() - t0
    for t in threads:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in threads), "a request never finished"
    outcomes = collections.Counter(status for status, _ in answers)
    assert len(answers) == 20 and outcomes[200] >= 1 and outcomes[200] + outcomes[503] == 20, answers
    assert all("busy" in body for status, body in answers if status == 503), answers
    assert info_latency < 5.0, f"/info took {info_latency:.1f}s during the burst"
    assert server.alive()
    # bounded: at most (1 running + 8 waiting) requests hold data; memory must not balloon
    assert server.peak_rss_mb() < rss_before + 2048, (rss_before, server.peak_rss_mb())


def _label_body(studies, case_id: str, tmp_path, value: int) -> bytes:
    ref = nib.load(str(studies / f"{case_id}.nii.gz"))
    label = np.zeros(ref.shape, np.uint8)
    label[::3, ::2, :] = value  # poorly compressible: the write takes a while
    path = tmp_path / f"{case_id}-{value}.nii"
    nib.save(nib.Nifti1Image(label, ref.affine), str(path))
    return path.read_bytes()


def test_sigkill_while_saving_labels_leaves_datastore_consistent(imported_studies, tmp_path):
    studies = copy_studies(imported_studies, tmp_path / "studies")
    ids = list_cases(studies, kind="3d")
    bodies = {cid: _label_body(studies, cid, tmp_path, 2) for cid in ids}
    env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
    srv = Server(studies, {"models": "segmentation"}, env=env)
    srv.wait_ready()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for cid, body in bodies.items():
                try:
                    requests.put(
                        f"{srv.url}/datastore/label",
                        params={"image": cid, "tag": "final"},
                        files={"label": ("l.nii", body)},
                        data={"params": "{}"},
                        timeout=30,
                    )
                except requests.RequestException:
                    return

    worker = threading.Thread(target=hammer)
    started = time.time()
    worker.start()
    # kill only once saves are under way: a label file written after the hammering began
    deadline = time.monotonic() + 120
    while not any(p.stat().st_mtime > started for p in (studies / "labels" / "final").glob("*.nii.gz")):
        assert time.monotonic() < deadline, f"no label was saved within 120 s:\n{srv.log_tail()}"
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=30)
    stop.set()
    worker.join(timeout=60)
    srv.stop()

    srv2 = Server(studies, {"models": "segmentation"}, env=env)
    try:
        srv2.wait_ready()
        objects = srv2.client.datastore()["objects"]
        finals = [cid for cid, obj in objects.items() if "final" in obj.get("labels", {})]
        assert finals, "nothing was saved before the kill"
        for cid in finals:
            data, _ = load_volume(studies / "labels" / "final" / f"{cid}.nii.gz")  # complete, readable
            assert set(np.unique(data).astype(int)) <= {0, 1, 2, 3}
        assert not list((studies / "labels").glob("*/.*partial*")), "partial files must be cleaned up"
        json.loads((studies / "datastore_v2.json").read_text())
    finally:
        srv2.stop()
