"""``brain-tumor-dev bench-pacs``: time to the first segmentation of a study from a PACS.

On the benchmark's BraTS-size synthetic glioma (240x240x155 at 1 mm, four sequences) it
measures, in one run and through real servers driven like Slicer (``result_extension
.nrrd``):

* **folder**: the case served from a local datastore (the baseline);
* **PACS, cold cache**: the first request for a study the server has never fetched: QIDO +
  WADO-RS of four series from a real Orthanc, conversion, caching, then inference. Each
  timed call uses a fresh copy of the study (new UIDs), so every call is really cold;
* **PACS, warm cache**: the same study asked again, served from the cache.

Both servers have their model loaded before timing (one untimed request each) and scoring
off; they are up at the same time and their calls alternate (folder, cold, warm, folder, ...)
so that load from anything else on the machine falls on all three alike, each after a short
pause. Ratios are against the folder figure of the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SLICER_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant (default 5)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmark_pacs.json"), help="JSON results")
    p.add_argument("--markdown", type=Path, default=Path("docs/benchmark_pacs.md"), help="Markdown table")
    p.add_argument("--workdir", type=Path, default=None, help="keep generated data here")


#: Pause before each timed call, so the previous call's clean-up (a server freeing a fetched
#: study, the datastore watcher registering new files) never falls into the next timing.
SETTLE_S = 2.0


def _timed(fn: Any) -> float:
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times]}


def _upload_copies(orthanc: Any, case: Path, n: int, workdir: Path) -> tuple[list[str], float]:
    """``n`` copies of the case as separate studies on the PACS; their UIDs and the upload time per study."""
    from brain_tumor_mri.imageio import load_sequences
    from brain_tumor_mri.labels import SEQUENCES
    from brain_tumor_mri.layout import resolve_case

    from .dicom_studies import write_case_study

    stack, affine, _ = load_sequences(resolve_case(case).sequences)
    volumes = dict(zip(SEQUENCES, stack))
    uids, upload_s = [], []
    for i in range(n):
        written = write_case_study(volumes, affine, workdir / f"study-{i}", f"BENCH-{i}")
        files = written.all_files()
        upload_s.append(_timed(lambda files=files: orthanc.upload(files)))
        uids.append(written.study_uid)
    return uids, statistics.median(upload_s)


def _interleaved_timings(studies: Path, case_id: str, case: Path, repeats: int, workdir: Path) -> dict[str, Any]:
    """Both servers up at once, calls alternated (folder, PACS cold, PACS warm) so they share load."""
    from .orthanc import Orthanc
    from .server_process import Server, copy_studies

    orthanc = Orthanc(workdir / "orthanc", users={"bench": "bench"}).start()
    servers: list[Server] = []
    try:
        uids, upload_s = _upload_copies(orthanc, case, repeats + 1, workdir / "dicom")
        stamp = int(time.time())
        env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        folder = Server(copy_studies(studies, workdir / f"folder-{stamp}"), {"models": "segmentation"}, env=env)
        servers.append(folder)
        cache = workdir / f"cache-{stamp}"
        pacs_env = {**env, "MONAI_LABEL_DICOMWEB_USERNAME": "bench", "MONAI_LABEL_DICOMWEB_PASSWORD": "bench"}
        pacs_conf = {"models": "segmentation", "pacs_cache": str(cache)}
        pacs = Server(cache, pacs_conf, env=pacs_env, studies_arg=orthanc.dicomweb_url)
        servers.append(pacs)
        for srv in servers:
            srv.wait_ready()
        folder.client.infer("segmentation", case_id, SLICER_PARAMS)  # model loads (and one fetch), untimed
        pacs.client.infer("segmentation", uids[0], SLICER_PARAMS)
        times: dict[str, list[float]] = {"folder": [], "cold": [], "warm": []}
        for uid in uids[1:]:
            times["folder"].append(_timed(lambda: folder.client.infer("segmentation", case_id, SLICER_PARAMS)))
            times["cold"].append(_timed(lambda uid=uid: pacs.client.infer("segmentation", uid, SLICER_PARAMS)))
            times["warm"].append(_timed(lambda uid=uid: pacs.client.infer("segmentation", uid, SLICER_PARAMS)))
        return {
            "folder": {**_summary(times["folder"]), "peak_rss_mb": round(folder.peak_rss_mb(), 1)},
            "pacs": {
                "cold": _summary(times["cold"]),
                "warm": _summary(times["warm"]),
                "upload_per_study_s": round(upload_s, 3),
                "peak_rss_mb": round(pacs.peak_rss_mb(), 1),
            },
        }
    finally:
        for srv in servers:
            srv.stop()
        orthanc.stop()


def run(args: argparse.Namespace) -> int:
    import torch

    from .benchmark import _make_case

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bt-bench-pacs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    image, case_id = _make_case(workdir)
    results: dict[str, Any] = {
        "case": "synthetic glioma, 240x240x155 at 1 mm, 4 sequences (4 x 155 DICOM instances)",
        "machine": {"cpus": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "repeats": args.repeats,
    }
    logger.info("folder datastore and PACS (Orthanc over DICOMweb), interleaved ...")
    results.update(_interleaved_timings(image.parent, case_id, image, args.repeats, workdir))
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    base = results["folder"]["median_s"]
    results["cold_vs_folder"] = round(results["pacs"]["cold"]["median_s"] / base, 2)
    results["warm_vs_folder"] = round(results["pacs"]["warm"]["median_s"] / base, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(to_markdown(results))
    logger.info("PACS benchmark written to %s and %s\n%s", args.out, args.markdown, to_markdown(results))
    return 0


def to_markdown(r: dict[str, Any]) -> str:
    """The README table: medians (ratios against the folder median) and the fastest call."""
    p = r["pacs"]
    rows = [
        "| first segmentation of a case, through the server | median s | vs folder | fastest s |",
        "|---|---|---|---|",
        f"| folder datastore (baseline) | {r['folder']['median_s']:.2f} | 1.00x | {min(r['folder']['times_s']):.2f} |",
        f"| PACS, cold cache (fetch 4 series + convert + segment) | {p['cold']['median_s']:.2f} "
        f"| {r['cold_vs_folder']:.2f}x | {min(p['cold']['times_s']):.2f} |",
        f"| PACS, warm cache | {p['warm']['median_s']:.2f} | {r['warm_vs_folder']:.2f}x "
        f"| {min(p['warm']['times_s']):.2f} |",
        "",
        f"Case: {r['case']}; {r['repeats']} timed calls per row after a model warm-up, rows interleaved; a fresh "
        f"study copy for every cold call; server peak memory {p['peak_rss_mb']:.0f} MiB (PACS) / "
        f"{r['folder']['peak_rss_mb']:.0f} MiB (folder); machine: {r['machine']}, load average during the run "
        f"{r.get('load_average')}.",
    ]
    return "\n".join(rows) + "\n"
