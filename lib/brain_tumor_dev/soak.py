"""``brain-tumor-dev soak``: a bounded mixed load on a real server; resources must stay flat, no label lost.

Starts ``monailabel start_server`` on a copy of the sample datastore (its own temp folder,
optionally with authentication on against a local realm), warms it up, then for a fixed
time runs two annotators (Next Sample, infer, save a corrected label), a stream of bad
inputs and one training run side by side. Every few seconds it samples the server's
resident memory, open file descriptors, temp-folder entries and the datastore's disk use.

Afterwards it checks (``check``): no unexpected answer; temp folder back to its baseline;
file descriptors and memory within ``BOUNDS`` of the warmed-up baseline; disk growth
explained by the label versions kept; and every accepted label is on disk among its case's
versions, the final label is the newest version and the datastore registers it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor_mri.imageio import load_volume

from .server_process import REPO, Server, copy_studies
from .soak_load import Load

logger = logging.getLogger(__name__)

#: How far the end state may be from the baseline: open files and temp files against the state after
#: warm-up; memory against the highest resident size in the first half of the run (allocator pools
#: grow to a plateau that depends on the load, so a cold baseline would flag growth that is not a leak;
#: a leak keeps growing through the second half).
BOUNDS = {"rss_growth_mb": 100.0, "fd_growth": 10, "disk_unexplained_mb": 1.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=180, help="duration of the mixed load (default 180)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the training run (0: no training)")
    p.add_argument("--train-model", default="segmentation", choices=["segmentation", "classification"])
    p.add_argument("--auth", action="store_true", help="run with authentication on against a local realm")
    p.add_argument("--workdir", type=Path, default=None, help="keep the datastore copy and logs here")
    p.add_argument("--out", type=Path, default=Path("docs/soak.json"), help="JSON results")
    p.add_argument("--markdown", type=Path, default=Path("docs/soak.md"), help="Markdown summary")


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    temp_files: int
    disk_mb: float


def disk_bytes(folder: Path, skip: tuple[str, ...] = ("model",)) -> int:
    """Allocated bytes under ``folder`` (hard links counted once), top-level ``skip`` folders excluded."""
    seen: set[int] = set()
    total = 0
    for p in folder.rglob("*"):
        if p.relative_to(folder).parts[0] in skip or not p.is_file():
            continue
        st = p.stat()
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def measure(pid: int, temp: Path, studies: Path, t0: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    return Sample(
        t=round(time.monotonic() - t0, 1),
        rss_mb=round(rss, 1),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        temp_files=sum(1 for p in temp.rglob("*") if p.is_file()),
        disk_mb=round(disk_bytes(studies) / 2**20, 3),
    )


def _label_hash(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.rint(data).astype(np.uint8)).tobytes()).hexdigest()


def check_labels(studies: Path, load: Load, registered: dict[str, Any]) -> dict[str, Any]:
    """Every accepted label among its case's versions on disk; final = newest version; registered."""
    problems, versions = [], 0
    for case_id, labels in load.record.accepted.items():
        folder = studies / "labels" / "history" / "final" / case_id
        records = json.loads((folder / "versions.json").read_text()) if (folder / "versions.json").is_file() else []
        versions += len(records)
        stored = {_label_hash(load_volume(folder / r["file"])[0]) for r in records if (folder / r["file"]).is_file()}
        missing = [i for i, label in enumerate(labels) if _label_hash(label) not in stored]
        if missing or len(records) < len(labels):
            problems.append(f"{case_id}: accepted saves {missing} not among {len(records)} versions on disk")
            continue
        final = studies / "labels" / "final" / f"{case_id}.nii.gz"
        if not final.is_file() or final.stat().st_ino != (folder / records[-1]["file"]).stat().st_ino:
            problems.append(f"{case_id}: the final label is not the newest version")
        info = registered.get(case_id, {}).get("labels", {}).get("final", {}).get("info", {})
        if info.get("provenance", {}).get("version") != records[-1]["version"]:
            problems.append(f"{case_id}: the datastore registers {info.get('provenance')} not v{len(records)}")
    saves = sum(len(v) for v in load.record.accepted.values())
    return {"cases": len(load.record.accepted), "accepted_saves": saves, "versions": versions, "problems": problems}


def check(report: dict[str, Any]) -> list[str]:
    """What is wrong with a soak's results (empty: all within bounds)."""
    base, end, bounds = report["baseline"], report["end"], report["bounds"]
    failures = list(report["unexpected"]) + list(report["labels"]["problems"])
    if end["temp_files"] != base["temp_files"]:
        failures.append(f"temp folder: {base['temp_files']} entries before, {end['temp_files']} after")
    if end["fds"] - base["fds"] > bounds["fd_growth"]:
        failures.append(f"open files grew {base['fds']} -> {end['fds']}")
    if report["rss_growth_mb"] > bounds["rss_growth_mb"]:
        failures.append(f"memory grew {report['rss_growth_mb']} MiB after the first half of the run")
    if report["disk"]["unexplained_mb"] > bounds["disk_unexplained_mb"]:
        failures.append(f"disk grew by {report['disk']['unexplained_mb']} MB more than the label versions kept")
    if report["labels"]["accepted_saves"] == 0:
        failures.append("no label was accepted: the load did not run")
    return failures


def _history_bytes(studies: Path, before: set[int]) -> int:
    seen, total = set(before), 0
    for p in (studies / "labels" / "history").rglob("*.nii.gz"):
        st = p.stat()
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def _settle(temp: Path, timeout: float = 30) -> None:
    """Wait until no request is holding a temp folder (they are removed just after each answer)."""
    deadline = time.monotonic() + timeout
    while any(temp.glob("brain-tumor-requests-*/req-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the report shows the count either way; ``check`` fails a mismatch


def _drive(load: Load, seconds: float, train: tuple[str, int], timeline: list, sample: Any = None) -> None:
    """Two annotators, bad inputs and a training run (``train`` = model, epochs > 0) for ``seconds``.

    The load goes on until the training run has ended, so the run is measured under load throughout.
    """
    epochs = train[1]
    load.deadline = time.monotonic() + seconds
    load.hard_deadline = load.deadline + 900
    if epochs > 0:
        load.training.set()  # before the workers start, so they keep going until the run has ended
    workers = [threading.Thread(target=load.annotate, args=(n, i)) for i, n in enumerate(("ann-a", "ann-b"))]
    workers.append(threading.Thread(target=load.bad_inputs))
    if epochs > 0:
        workers.append(threading.Thread(target=load.train, args=(train[0], epochs, seconds + 600)))
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        time.sleep(5)
        if sample is not None:
            timeline.append(sample())
    for w in workers:
        w.join()


def run_soak(
    source: Path,
    workdir: Path,
    seconds: float,
    auth: bool = False,
    epochs: int = 1,
    train_model: str = "segmentation",
    warmup: float = 15,
) -> dict[str, Any]:
    """One soak on a copy of the datastore ``source``; returns the report (see ``check``)."""
    studies, temp = copy_studies(source, workdir / "studies"), workdir / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    env, tokens, issuer = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "TMPDIR": str(temp)}, {}, None
    if auth:
        from .oidc_issuer import ROLES, LocalIssuer

        issuer = LocalIssuer()
        env.update(issuer.env())
        tokens = {r: issuer.token(f"soak-{r}", [ROLES[r]], expires_in=seconds + 3600) for r in ("annotator", "admin")}
    srv = Server(studies, {"models": "all"}, env=env)
    try:
        load = Load(srv.url, studies, workdir, deadline=0.0, tokens=tokens)
        srv.client = load.client("runner", "admin")
        srv.wait_ready()
        t0 = time.monotonic()
        _drive(load, warmup, ("", 0), [])  # the same load, unmeasured, until memory pools have grown
        history_before = {p.stat().st_ino for p in (studies / "labels").rglob("*.nii.gz")}
        _settle(temp)
        baseline = measure(srv.proc.pid, temp, studies, t0)
        timeline = [baseline]
        _drive(load, seconds, (train_model, epochs), timeline, lambda: measure(srv.proc.pid, temp, studies, t0))
        _settle(temp)
        end = measure(srv.proc.pid, temp, studies, t0)
        registered = srv.client.datastore()["objects"]
        labels = check_labels(studies, load, registered)
        growth = disk_bytes(studies) - baseline.disk_mb * 2**20
        kept = _history_bytes(studies, history_before)
    finally:
        srv.stop()
        if issuer is not None:
            issuer.stop()
    return {
        "seconds": seconds,
        "auth": auth,
        "epochs": epochs,
        "train_model": train_model,
        "answers": {f"{k} {s}": n for (k, s), n in sorted(load.record.answers.items())},
        "unexpected": load.record.unexpected,
        "baseline": asdict(baseline),
        "end": asdict(end),
        "peak_rss_mb": max(s.rss_mb for s in timeline + [end]),
        "rss_growth_mb": round(end.rss_mb - max(s.rss_mb for s in timeline[: max(1, len(timeline) // 2)]), 1),
        "timeline": [asdict(s) for s in timeline],
        "labels": labels,
        "disk": {
            "growth_mb": round(growth / 2**20, 3),
            "label_versions_mb": round(kept / 2**20, 3),
            "unexplained_mb": round((growth - kept) / 2**20, 3),
        },  # fmt: skip
        "bounds": BOUNDS,
    }


def to_markdown(r: dict[str, Any]) -> str:
    b, e = r["baseline"], r["end"]
    n = sum(v for k, v in r["answers"].items() if not k.endswith(" -1"))
    rows = [
        f"Soak: {r['timeline'][-1]['t'] - r['timeline'][0]['t']:.0f} s of mixed load (auth "
        f"{'on' if r['auth'] else 'off'}, a {r['epochs']}-epoch {r['train_model']} training run under load), "
        f"{n} answered requests, {r['labels']['accepted_saves']} labels accepted on {r['labels']['cases']} cases.",
        "",
        "| measure | after warm-up | end | peak | bound |",
        "|---|---|---|---|---|",
        f"| server RSS MiB | {b['rss_mb']:.0f} | {e['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | end at most "
        f"+{r['bounds']['rss_growth_mb']:.0f} over the first half's peak (was {r['rss_growth_mb']:+.0f}) |",
        f"| open file descriptors | {b['fds']} | {e['fds']} | {max(s['fds'] for s in r['timeline'])} | "
        f"+{r['bounds']['fd_growth']} |",
        f"| files in the temp folder | {b['temp_files']} | {e['temp_files']} | "
        f"{max(s['temp_files'] for s in r['timeline'])} | +0 |",
        f"| datastore MB (without model/) | {b['disk_mb']:.2f} | {e['disk_mb']:.2f} | | label versions kept "
        f"{r['disk']['label_versions_mb']:.2f} MB, unexplained {r['disk']['unexplained_mb']:.3f} MB |",
        "",
        f"Labels: {r['labels']['accepted_saves']} accepted saves, {r['labels']['versions']} versions on disk, "
        f"problems: {r['labels']['problems'] or 'none'}; unexpected answers: {r['unexpected'] or 'none'}.",
        "",
        "Answers: " + ", ".join(f"{k}: {v}" for k, v in r["answers"].items()),
    ]
    return "\n".join(rows) + "\n"


def run(args: argparse.Namespace) -> int:
    from brain_tumor_mri.data.importers import import_dataset

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bt-soak-"))
    source = workdir / "imported"
    if not source.exists():
        import_dataset(REPO / "sample-data", source, unlabelled=4)
    report = run_soak(
        source, workdir / f"run-{int(time.time())}", args.seconds, args.auth, args.epochs, args.train_model
    )
    report["failures"] = check(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    args.markdown.write_text(to_markdown(report))
    logger.info("soak written to %s and %s\n%s", args.out, args.markdown, to_markdown(report))
    if report["failures"]:
        logger.error("soak failed: %s", report["failures"])
        return 1
    return 0
