"""``brain-tumor-dev benchmark --training``: memory and time of training at growing scale.

In one run, on datastores generated and imported here: peak memory and time per epoch of
``brain-tumor train segmentation`` with 20 and with 200 cases at 2 mm and with 20 cases at
1 mm (each run a child process; memory is the peak proportional set size of it and its
DataLoader workers together, sampled every 0.25 s), the time from process start to the
first training step of a run with a cold cache and of the same run again with a warm one,
and inference seconds per BraTS-size case by one full-volume pass and by sliding window,
at 2 mm (the shipped weights) and at 1 mm (the 1 mm run's weights, used for timing only).
Every epoch is the same number of patches (``--samples-per-epoch``) plus validation of all
validation cases, so the figures compare the cost of a step, not the size of an epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the training benchmark (added to ``benchmark``'s)."""
    p.add_argument("--training", action="store_true", help="benchmark training scale instead of inference")
    p.add_argument("--small", type=int, default=20, help="cases of the small datastores (default 20)")
    p.add_argument("--large", type=int, default=200, help="cases of the large 2 mm datastore (default 200)")
    p.add_argument("--samples-per-epoch", type=int, default=16, help="patches per timed epoch (default 16)")


class PeakMemory:
    """Samples the proportional set size of a process and its children; keeps the peak (MB)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        import psutil

        root = psutil.Process(self.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total / 1e6

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, self._sample())
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def stop(self) -> float:
        """End sampling; the peak in MB."""
        self._stop.set()
        self._thread.join(timeout=5)
        return round(self.peak_mb, 1)


def make_studies(work: Path, name: str, cases: int, spacing: float, seed: int) -> Path:
    """A generated datastore of ``cases`` labelled 3D cases at ``spacing`` (reused if present)."""
    from brain_tumor_mri.data.importers import import_dataset
    from brain_tumor_mri.data.synthetic_dataset import write_dataset

    studies = work / f"{name}-studies"
    if not studies.is_dir():
        raw = work / f"{name}-raw"
        write_dataset(raw, n_cases=cases, seed=seed, spacing=spacing, slices_per_case=0, progress=False)
        import_dataset(raw, studies)
    return studies


def warm_cache(studies: Path, cache: Path, spacing: float) -> None:
    """Preprocess a datastore into ``cache`` beforehand, as an earlier run would have."""
    from brain_tumor_mri.training.cache import CaseCache
    from brain_tumor_mri.training.cases import segmentation_cases
    from brain_tumor_mri.training.seg_data import seg_family

    CaseCache(cache, seg_family(spacing, False)).ensure(segmentation_cases(studies), workers=2)


def train_once(studies: Path, run: Path, cache: Path, extra: list[str]) -> dict[str, Any]:
    """One ``brain-tumor train segmentation`` child process: its result, peak memory and first-step time."""
    cmd = [sys.executable, "-m", "brain_tumor_mri.cli", "train", "segmentation", str(studies), "--init", "none",
           "--epochs", "1", "--out", str(run / "seg.pt"), "--run-dir", str(run), "--cache-dir", str(cache),
           *extra]  # fmt: skip
    started = time.time()
    with open(run.parent / f"{run.name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        memory = PeakMemory(proc.pid)
        code = proc.wait()
    peak = memory.stop()
    if code != 0:
        raise RuntimeError(f"training run failed ({code}); see {run.parent / f'{run.name}.log'}")
    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    epoch = result["history"][0]
    t = result["timings"]
    return {
        "peak_memory_mb": peak,
        "process_to_first_step_s": round(t["first_step_unix"] - started, 2),
        "epoch_s": epoch["seconds"], "data_wait_s": epoch["data_s"], "step_s": epoch["step_s"],
        "validation_s": epoch["val_s"], "patches": t["samples_per_epoch"], "batch_size": t["batch_size"],
        "n_train": result["cache"]["n_train"], "n_val": result["decision_basis"]["n_val"],
        "cache": {k: result["cache"][k] for k in ("hits", "built", "seconds", "entries_mb", "in_memory")},
    }  # fmt: skip


def inference_times(work: Path, weights_1mm: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds per BraTS-size case (240x240x155 at 1 mm): full pass vs sliding window, 2 mm and 1 mm models."""
    import torch

    from brain_tumor_mri.config import default_weights_dir
    from brain_tumor_mri.imageio import load_sequences
    from brain_tumor_mri.inference.segmenter import Segmenter
    from brain_tumor_mri.layout import image_path, list_cases, resolve_case
    from brain_tumor_mri.networks.checkpoint import load_model, save_model
    from brain_tumor_mri.networks.store import ModelStore
    from brain_tumor_mri.runtime import use_reduced_precision

    studies = make_studies(work, "brats-size-1mm", 1, 1.0, 4242)
    case = list_cases(studies, kind="3d")[0]
    path = image_path(studies, case)
    assert path is not None
    stack, affine, _ = load_sequences(resolve_case(path).sequences)
    device = torch.device("cpu")
    reduced = use_reduced_precision(device, "auto")
    out: dict[str, Any] = {"case_shape": list(stack.shape[1:]), "reduced_precision": reduced}
    for name, weights in (("2mm", default_weights_dir() / "segmentation.pt"), ("1mm", weights_1mm)):
        loaded = load_model(weights, "segmentation")
        copy = work / f"infer-{name}" / "segmentation.pt"
        roi = loaded.meta.get("patch", [96, 96, 96])
        meta = {**loaded.meta, "inferer": {"mode": "auto", "roi": roi, "overlap": 0.5, "blend": "gaussian"}}
        save_model(loaded.network, copy, {k: v for k, v in meta.items() if k not in ("sha256", "version")})
        store = ModelStore("segmentation", copy, copy, device, channels_last=reduced)
        for mode, budget in (("full", 1e9), ("sliding_window", 1e-3)):
            seg = Segmenter(store, 2.0, reduced, budget)
            seg.segment(stack, affine)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = seg.segment(stack, affine)
                times.append(time.perf_counter() - t0)
            assert res.inferer == mode
            out[f"{name}_{mode}_s"] = round(statistics.median(times), 2)
        out[f"{name}_roi"] = roi
    return out


def run_training_benchmark(args: argparse.Namespace) -> int:
    """The whole training benchmark; JSON and Markdown as for the inference benchmark."""
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bt-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    spe = ["--samples-per-epoch", str(args.samples_per_epoch), "--batch-size", "2"]
    t0 = time.monotonic()
    small = make_studies(work, f"gen{args.small}-2mm", args.small, 2.0, 11)
    large = make_studies(work, f"gen{args.large}-2mm", args.large, 2.0, 11)
    fine = make_studies(work, f"gen{args.small}-1mm", args.small, 1.0, 11)
    logger.info("generated the datastores in %.0f s", time.monotonic() - t0)
    r: dict[str, Any] = {"samples_per_epoch": args.samples_per_epoch}
    runs = work / "runs"
    runs.mkdir(exist_ok=True)
    r["large_2mm_cold"] = train_once(large, runs / "large-cold", work / "cache-large", spe)
    r["large_2mm"] = train_once(large, runs / "large-warm", work / "cache-large", spe)
    warm_cache(small, work / "cache-small", 2.0)
    r["small_2mm"] = train_once(small, runs / "small-warm", work / "cache-small", spe)
    warm_cache(fine, work / "cache-fine", 1.0)
    r["small_1mm"] = train_once(
        fine, runs / "fine-warm", work / "cache-fine", [*spe, "--spacing", "1", "--patch", "128"]
    )
    r["rss_ratio_large_vs_small"] = round(r["large_2mm"]["peak_memory_mb"] / r["small_2mm"]["peak_memory_mb"], 3)
    r["warm_start_speedup"] = round(
        r["large_2mm_cold"]["process_to_first_step_s"] / r["large_2mm"]["process_to_first_step_s"], 1
    )
    r["inference"] = inference_times(work, runs / "fine-warm" / "seg.pt")
    r["minutes"] = round((time.monotonic() - t0) / 60, 1)
    r["machine"] = _machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2), encoding="utf-8")
    args.markdown.write_text(to_markdown(r), encoding="utf-8")
    logger.info("training benchmark written to %s and %s\n%s", args.out, args.markdown, to_markdown(r))
    return 0


def _machine() -> dict[str, Any]:
    import os

    import torch

    return {"cpus": len(os.sched_getaffinity(0)), "cuda": torch.cuda.is_available(),
            "load_average_1min": round(os.getloadavg()[0], 1)}  # fmt: skip


def to_markdown(r: dict[str, Any]) -> str:
    """The README's training-scale tables."""
    rows = ["| run (segmentation, 1 epoch) | cases train/val | peak memory MB | epoch s | data wait s | steps s | "
            "validation s | process start to first step s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    small, large = (
        r["small_2mm"]["n_train"] + r["small_2mm"]["n_val"],
        r["large_2mm"]["n_train"] + r["large_2mm"]["n_val"],
    )
    names = {"small_2mm": f"{small} cases, 2 mm, warm cache", "large_2mm": f"{large} cases, 2 mm, warm cache",
             "large_2mm_cold": f"{large} cases, 2 mm, cold cache",
             "small_1mm": f"{small} cases, 1 mm (patch 128), warm cache"}  # fmt: skip
    for key, name in names.items():
        x = r[key]
        rows.append(f"| {name} | {x['n_train']}/{x['n_val']} | {x['peak_memory_mb']:.0f} | {x['epoch_s']:.1f} | "
                    f"{x['data_wait_s']:.1f} | {x['step_s']:.1f} | {x['validation_s']:.1f} | "
                    f"{x['process_to_first_step_s']:.1f} |")  # fmt: skip
    inf = r["inference"]
    ratio, speedup = r["rss_ratio_large_vs_small"], r["warm_start_speedup"]
    rows += ["", f"Peak memory {large} vs {small} cases: **{ratio}x**; a warm cache reaches the first step "
             f"**{speedup}x** sooner than a cold one. Each epoch: {r['samples_per_epoch']} patches (batch 2) plus "
             "validation of every validation case.", "",
             "| inference, BraTS-size case | one full-volume pass s | sliding window s |", "|---|---|---|",
             f"| 2 mm model (shipped), window {inf['2mm_roi']} | {inf['2mm_full_s']} | {inf['2mm_sliding_window_s']} |",
             f"| 1 mm model, window {inf['1mm_roi']} | {inf['1mm_full_s']} | {inf['1mm_sliding_window_s']} |", "",
             f"Machine: {r['machine']}; {r['minutes']} min in all."]  # fmt: skip
    return "\n".join(rows) + "\n"
