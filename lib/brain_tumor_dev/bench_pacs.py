"""``brain-tumor-dev bench-pacs``: time to the first segmentation of a study from a PACS.

On the benchmark's BraTS-size synthetic glioma (240x240x155 at 1 mm, four sequences) it
measures, in one run and through real servers driven like Slicer (``result_extension
.nrrd``):

* **folder**: the case served from a local datastore (the baseline);
* **PACS, cold cache**: the first request for a study the server has never fetched: QIDO +
  WADO-RS of four series from a real Orthanc, conversion, caching, then inference. Each
  timed call uses a fresh copy of the study (new UIDs), so every call is really cold;
* **PACS, warm cache**: the same study asked again, served from the cache.

Both servers have their model loaded before timing (one untimed request each), scoring is
off, and they run one after the other so they never share the CPU. Ratios are against the
folder figure of the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SLICER_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (default 3)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmark_pacs.json"), help="JSON results")
    p.add_argument("--markdown", type=Path, default=Path("docs/benchmark_pacs.md"), help="Markdown table")
    p.add_argument("--workdir", type=Path, default=None, help="keep generated data here")


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times]}


def _folder_timings(studies: Path, case_id: str, repeats: int) -> dict[str, Any]:
    from .server_process import Server, copy_studies

    srv = Server(
        copy_studies(studies, studies.parent / f"folder-{int(time.time())}"),
        {"models": "segmentation"},
        env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"},
    )
    try:
        srv.wait_ready()
        srv.client.infer("segmentation", case_id, SLICER_PARAMS)  # model load, untimed
        times = [_timed(lambda: srv.client.infer("segmentation", case_id, SLICER_PARAMS)) for _ in range(repeats)]
        res = _summary(times)
        res["peak_rss_mb"] = round(srv.peak_rss_mb(), 1)
        return res
    finally:
        srv.stop()


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
        t0 = time.perf_counter()
        orthanc.upload(files)
        upload_s.append(time.perf_counter() - t0)
        uids.append(written.study_uid)
    return uids, statistics.median(upload_s)


def _pacs_timings(case: Path, repeats: int, workdir: Path) -> dict[str, Any]:
    from .orthanc import Orthanc
    from .server_process import Server

    orthanc = Orthanc(workdir / "orthanc", users={"bench": "bench"}).start()
    srv = None
    try:
        uids, upload_s = _upload_copies(orthanc, case, repeats + 1, workdir / "dicom")
        cache = workdir / f"cache-{int(time.time())}"
        env = {
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_DICOMWEB_USERNAME": "bench",
            "MONAI_LABEL_DICOMWEB_PASSWORD": "bench",
        }
        conf = {"models": "segmentation", "pacs_cache": str(cache)}
        srv = Server(cache, conf, env=env, studies_arg=orthanc.dicomweb_url)
        srv.wait_ready()
        srv.client.infer("segmentation", uids[0], SLICER_PARAMS)  # model load (and one fetch), untimed
        cold = [_timed(lambda uid=uid: srv.client.infer("segmentation", uid, SLICER_PARAMS)) for uid in uids[1:]]
        warm = [_timed(lambda: srv.client.infer("segmentation", uids[-1], SLICER_PARAMS)) for _ in range(repeats)]
        return {
            "cold": _summary(cold),
            "warm": _summary(warm),
            "upload_per_study_s": round(upload_s, 3),
            "peak_rss_mb": round(srv.peak_rss_mb(), 1),
        }
    finally:
        if srv is not None:
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
    logger.info("folder datastore ...")
    results["folder"] = _folder_timings(image.parent, case_id, args.repeats)
    logger.info("PACS (Orthanc over DICOMweb) ...")
    results["pacs"] = _pacs_timings(image, args.repeats, workdir)
    base = results["folder"]["median_s"]
    results["cold_vs_folder"] = round(results["pacs"]["cold"]["median_s"] / base, 2)
    results["warm_vs_folder"] = round(results["pacs"]["warm"]["median_s"] / base, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(to_markdown(results))
    logger.info("PACS benchmark written to %s and %s\n%s", args.out, args.markdown, to_markdown(results))
    return 0


def to_markdown(r: dict[str, Any]) -> str:
    """The README table."""
    p = r["pacs"]
    rows = [
        "| first segmentation of a case, through the server | median s | vs folder |",
        "|---|---|---|",
        f"| folder datastore (baseline) | {r['folder']['median_s']:.2f} | 1.00x |",
        f"| PACS, cold cache (fetch 4 series + convert + segment) | {p['cold']['median_s']:.2f} "
        f"| {r['cold_vs_folder']:.2f}x |",
        f"| PACS, warm cache | {p['warm']['median_s']:.2f} | {r['warm_vs_folder']:.2f}x |",
        "",
        f"Case: {r['case']}; {r['repeats']} timed calls per row after a model warm-up; a fresh study copy for "
        f"every cold call; server peak memory {p['peak_rss_mb']:.0f} MiB (PACS) / {r['folder']['peak_rss_mb']:.0f} "
        f"MiB (folder); machine: {r['machine']}.",
    ]
    return "\n".join(rows) + "\n"
