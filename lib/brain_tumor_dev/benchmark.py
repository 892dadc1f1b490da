"""``brain-tumor-dev benchmark``: segmentation (and classification) speed and memory.

``--training`` measures training at growing scale instead (``bench_training``).

On a BraTS-size synthetic case (240x240x155, four sequences) it measures, in one run:
our pipeline end to end through a real server (client request to label file), our
pipeline in-process, and the stock MONAI Label style baseline in-process; each
in-process variant runs in its own child process so its peak memory is its own.
Figures are medians over repeats after a warm-up call; ratios are against the baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up (default 3)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmark.json"), help="JSON results")
    p.add_argument("--markdown", type=Path, default=Path("docs/benchmark.md"), help="Markdown table")
    p.add_argument("--skip-baseline", action="store_true", help="do not run the stock pipeline")
    p.add_argument("--workdir", type=Path, default=None, help="keep generated data here")
    p.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    from .bench_training import add_arguments as add_training

    add_training(p)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _time_calls(fn, repeats: int) -> dict[str, Any]:
    """One warm-up call, then ``repeats`` timed calls; median and all times in seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "first_s": round(first, 3),
        "median_s": round(statistics.median(times), 3),
        "times_s": [round(t, 3) for t in times],
    }


def _worker(args: argparse.Namespace) -> int:
    """Child process: time one pipeline on ``args.case`` and write JSON to ``args.result``."""
    from brain_tumor_mri.layout import resolve_case

    case = resolve_case(args.case)
    out = Path(tempfile.mkdtemp()) / "label.nii.gz"
    if args.worker == "baseline":
        from .baseline import StockPipeline

        pipe = StockPipeline()
        files = [case.sequences[k] for k in sorted(case.sequences)]
        res = _time_calls(lambda: pipe(files, out), args.repeats)
    else:
        from brain_tumor_mri.config import AppConfig
        from brain_tumor_mri.imageio import load_sequences, save_label
        from brain_tumor_mri.inference.served import ServedModels

        from .server_process import APP

        rt = ServedModels(AppConfig.from_conf({}, APP, args.case.parent))

        def run_ours() -> None:
            stack, affine, _ = load_sequences(case.sequences)
            save_label(out, rt.segmenter().segment(stack, affine).label, affine)

        res = _time_calls(run_ours, args.repeats)
        res["reduced_precision"] = rt.reduced
    res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    args.result.write_text(json.dumps(res))
    return 0


def _child(kind: str, case: Path, repeats: int, tmp: Path) -> dict[str, Any]:
    result = tmp / f"{kind}.json"
    cmd = [
        sys.executable,
        "-m",
        "brain_tumor_dev.cli",
        "benchmark",
        "--worker",
        kind,
        "--case",
        str(case),
        "--result",
        str(result),
        "--repeats",
        str(repeats),
    ]
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def _make_case(workdir: Path) -> tuple[Path, str]:
    """A BraTS-size (240x240x155 at 1 mm) synthetic glioma case, imported as a datastore."""
    from brain_tumor_mri.data.importers import import_dataset
    from brain_tumor_mri.data.synthetic import tumor_type_for
    from brain_tumor_mri.data.synthetic_dataset import write_dataset

    raw, studies = workdir / "raw", workdir / "studies"
    if not studies.is_dir():
        seed = next(s for s in range(4242, 4342) if tumor_type_for(0, s) == "glioma")
        write_dataset(raw, n_cases=1, seed=seed, spacing=1.0, slices_per_case=1)
        import_dataset(raw, studies)
    image = sorted(p for p in studies.glob("*.nii.gz"))[0]
    return image, image.name[: -len(".nii.gz")]


def _server_timings(studies: Path, case_id: str, repeats: int) -> dict[str, Any]:
    """End to end through a real server: Slicer's request shape, label file back."""
    from .server_process import Server, copy_studies

    # no background scoring: it would share the CPU with the requests being timed
    srv = Server(
        copy_studies(studies, studies.parent / f"served-{int(time.time())}"),
        {"models": "all"},
        env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"},
    )
    try:
        srv.wait_ready()
        params = {"result_extension": ".nrrd", "result_dtype": "uint8"}
        res = _time_calls(lambda: srv.client.infer("segmentation", case_id, params), repeats)
        res["peak_rss_mb"] = round(srv.peak_rss_mb(), 1)
        slice_id = sorted(p.name[: -len(".png")] for p in studies.glob("*.png"))[0]
        res["classify_2d"] = _time_calls(lambda: srv.client.infer("classification", slice_id, {}), max(repeats, 5))
        res["classify_3d"] = _time_calls(lambda: srv.client.infer("classification", case_id, {}), repeats)
        return res
    finally:
        srv.stop()


def _classifier_model_time(studies: Path, repeats: int = 20) -> dict[str, Any]:
    """Forward time of the 2D classifier alone on one preprocessed slice (the 50 ms goal)."""
    from brain_tumor_mri.config import AppConfig
    from brain_tumor_mri.inference.served import ServedModels
    from brain_tumor_mri.transforms.classify_preprocess import ClassPreprocess, prepare_image_file

    from .server_process import APP

    clf = ServedModels(AppConfig.from_conf({}, APP, studies)).classifier()
    model = clf.stores["2d"].get()
    image = prepare_image_file(sorted(studies.glob("*.png"))[0], ClassPreprocess.from_meta(model.meta))
    return _time_calls(lambda: clf.predict(image, "2d", model), repeats)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        return _worker(args)
    if args.training:
        from .bench_training import run_training_benchmark

        if args.out == Path("docs/benchmark.json"):
            args.out, args.markdown = Path("docs/benchmark_training.json"), Path("docs/benchmark_training.md")
        return run_training_benchmark(args)
    import torch

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bt-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    image, case_id = _make_case(workdir)
    results: dict[str, Any] = {
        "case": "synthetic glioma, 240x240x155 at 1 mm, 4 sequences",
        "machine": {
            "cpus": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "repeats": args.repeats,
    }
    logger.info("server end to end ...")
    results["ours_server"] = _server_timings(image.parent, case_id, args.repeats)
    logger.info("classifier model time ...")
    results["classify_2d_model"] = _classifier_model_time(image.parent)
    logger.info("ours in-process ...")
    results["ours_inprocess"] = _child("ours", image, args.repeats, workdir)
    if not args.skip_baseline:
        logger.info("stock baseline in-process ...")
        results["baseline_inprocess"] = _child("baseline", image, args.repeats, workdir)
        b = results["baseline_inprocess"]["median_s"]
        results["speedup_inprocess"] = round(b / results["ours_inprocess"]["median_s"], 2)
        results["speedup_server_vs_baseline_inprocess"] = round(b / results["ours_server"]["median_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(to_markdown(results))
    logger.info("benchmark written to %s and %s\n%s", args.out, args.markdown, to_markdown(results))
    return 0


def to_markdown(r: dict[str, Any]) -> str:
    """The README table."""
    rows = ["| pipeline | median s/case | first call s | peak memory MiB |", "|---|---|---|---|"]
    names = {
        "ours_server": "this app, end to end through the server (Slicer request -> label file)",
        "ours_inprocess": "this app, in-process (load 4 sequences -> label file)",
        "baseline_inprocess": "stock MONAI Label style (SegResNet, 96^3 sliding window, fp32), in-process",
    }
    for key, name in names.items():
        if key in r:
            x = r[key]
            rows.append(f"| {name} | {x['median_s']:.2f} | {x['first_s']:.2f} | {x['peak_rss_mb']:.0f} |")
    if "speedup_inprocess" in r:
        rows.append("")
        rows.append(
            f"Speed-up in-process vs the stock pipeline: **{r['speedup_inprocess']}x**; "
            f"server end to end vs stock in-process: **{r['speedup_server_vs_baseline_inprocess']}x**."
        )
    if "classify_2d" in r.get("ours_server", {}):
        srv = r["ours_server"]
        rows.append("")
        rows.append("| classification | median s |")
        rows.append("|---|---|")
        rows.append(f"| 2D image, model forward only | {r['classify_2d_model']['median_s']:.4f} |")
        rows.append(f"| 2D image, end to end through the server | {srv['classify_2d']['median_s']:.3f} |")
        rows.append(
            f"| 3D case (4 sequences, 240x240x155), end to end through the server | "
            f"{srv['classify_3d']['median_s']:.3f} |"
        )
    rows.append("")
    rows.append(f"Case: {r['case']}; {r['repeats']} timed calls after one warm-up; machine: {r['machine']}.")
    return "\n".join(rows) + "\n"
