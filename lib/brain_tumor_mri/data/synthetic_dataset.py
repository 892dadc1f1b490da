"""Writing a synthetic dataset: BraTS-layout volumes, Kaggle-style 2D pictures, metadata and README."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .anatomies import ANATOMIES
from .synthetic import GeneratorOptions, generate_case, write_case
from .synthetic_fields import output_grid

logger = logging.getLogger(__name__)

#: Per-case metadata file (``brats/cases.jsonl``), one JSON object a line.
CASES_JSONL = "cases.jsonl"


def write_dataset(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    spacing: float = 1.0,
    slices_per_case: int = 4,
    *,
    command: str | None = None,
    progress: bool = True,
    options: GeneratorOptions | None = None,
    start_index: int = 0,
) -> list[dict[str, Any]]:
    """Generate and write cases ``start_index .. start_index + n_cases - 1``; return their metadata.

    Cases are written one at a time and not kept: a 1 mm case holds ~200 MB of arrays, so
    keeping them all (as an earlier version did) ran a 240-case set out of memory.

    Writes ``brats/<id>/`` volumes, ``brats/tumor_types.csv``, ``brats/cases.jsonl`` (anatomy,
    profile, domain, lesions, acquisition per case), ``kaggle/<class>/`` pictures and a
    README. ``start_index`` lets a held-out set use indices a training set never drew.
    """
    from tqdm import tqdm

    from .slices2d import write_slices

    if n_cases < 1:
        raise ValueError(f"--cases must be at least 1, got {n_cases}")
    if slices_per_case < 0:
        raise ValueError(f"--slices-per-case must be >= 0, got {slices_per_case}")
    if start_index < 0:
        raise ValueError(f"--start-index must be >= 0, got {start_index}")
    opts = options or GeneratorOptions()
    out = Path(out_dir)
    brats = out / "brats"
    brats.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    rows = []
    table: list[str] = []
    indices = range(start_index, start_index + n_cases)
    with open(brats / CASES_JSONL, "w", encoding="utf-8") as meta_fp:
        for index in tqdm(indices, desc="synthetic cases", unit="case", disable=None if progress else True):
            case = generate_case(index, seed, spacing, options=opts)
            write_case(case, brats)
            pictures = write_slices(case, out / "kaggle", slices_per_case, np.random.default_rng([seed, index, 2]))
            rows.append((case.case_id, case.tumor_type))
            table.append(_table_row(case.meta, case.seg, len(pictures)))
            meta_fp.write(json.dumps(case.meta, sort_keys=True) + "\n")
            written.append(case.meta)
            logger.debug("wrote %s (%s, %s)", case.case_id, case.tumor_type, case.anatomy)
            del case  # release the volumes before the next case is drawn
    with open(brats / "tumor_types.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["case_id", "tumor_type"])
        writer.writerows(rows)
    cmd = command or (
        f"brain-tumor sample-data {out_dir} --cases {n_cases} --seed {seed} --spacing {spacing:g} "
        f"--slices-per-case {slices_per_case}"
    )
    readme = _readme(cmd, n_cases, seed, spacing, slices_per_case, opts, table)
    (out / "README.md").write_text(readme, encoding="utf-8")
    logger.info("wrote %d synthetic cases to %s", n_cases, out)
    return written


#: Names of the segmentation labels for the README's case table (internal convention).
_LABEL_NAMES = {1: "core", 2: "edema", 3: "enhancing"}
_TABLE_HEAD = (
    "| case | tumour type | anatomy | lesion style (count) | labels present | whole tumour (mL) "
    "| wild sequences | scanner | 2D pictures |\n|---|---|---|---|---|---|---|---|---|"
)


def _table_row(meta: dict[str, Any], seg: np.ndarray, n_pictures: int) -> str:
    """One Markdown table row that says what a written case holds (from its metadata and labels)."""
    present = set(np.unique(seg).tolist())
    labels = ", ".join(name for value, name in _LABEL_NAMES.items() if value in present) or "none"
    styles = ", ".join(sorted({lesion["style"] for lesion in meta["lesions"]})) or "-"
    wild = ", ".join(meta.get("wild_sequences", [])) or "-"
    return (
        f"| `{meta['case_id']}` | {meta['tumor_type']} | {meta['anatomy']} | {styles} ({meta['n_lesions']}) "
        f"| {labels} | {meta['whole_tumor_ml']:g} | {wild} | {meta['profile']} | {n_pictures} |"
    )


def _readme(
    command: str,
    n_cases: int,
    seed: int,
    spacing: float,
    slices_per_case: int,
    opts: GeneratorOptions | None = None,
    table: list[str] | None = None,
) -> str:
    """The README that says what the generated folder is (synthetic, reproducible), what it holds and its layout."""
    opts = opts or GeneratorOptions()
    shape = output_grid(spacing).shape
    anatomies = "\n".join(f"  - `{name}`: {ANATOMIES[name]}" for name in opts.anatomies)
    profiles = ", ".join(f"{n} {w:g}" for n, w in opts.profiles)
    rows = "\n".join(table or [])
    return f"""# Synthetic brain-tumour MRI sample data

**SYNTHETIC DATA - NOT PATIENT DATA.** Every image here was generated by this project. The
brains come from real tumour-free anatomies that ship with open-source packages (tissue
maps derived by this project's own code, then randomly warped, scaled and mirrored):

{anatomies}

The 2D pictures put the brain inside the real scalp, skull, orbits and face of Colin27
(`ch2.nii.gz`, Debian mricron-data, BSD-3-clause). Tumours, contrasts and scanner effects
are simulated; no scan of any patient and no real tumour was used. Nothing made from these
files is clinically meaningful.

Generated with seed {seed} (domain `{opts.domain}`, scanner profiles {profiles},
metastasis fraction {opts.metastasis_fraction:g}):

    {command}

The same command (same seed, spacing and options, on the same platform with the project's
pinned package versions) regenerates byte-identical files, README included (gzip headers carry
no time stamp); each case depends only on (seed, case index, options), so one case can be
regenerated alone.

## Cases

{_TABLE_HEAD}
{rows}

`brain-tumor import DIR STUDIES --unlabelled N` keeps the ground truth of the last N labelled
3D cases (by id) only as a reference, so they wait in the annotation pool.

## What is randomised

- Anatomy per case (every block of cases uses each listed anatomy once), smooth warp,
  size, left-right flip, mass effect of the tumour.
- Tumour: glioma (high grade with necrotic or cystic core, low grade with little or no
  enhancement, butterfly gliomas crossing the corpus callosum), meningioma (no, rim or
  vasogenic edema), pituitary adenoma, multi-lesion metastases (2-5 lesions at the
  grey-white junction, `tumor_type` `metastasis`, no 2D pictures) or none; whole-tumour
  volumes about 0.5-200 mL.
- Contrast (SynthSeg-style): per case and sequence, tissue and lesion intensities from wide
  ranges that keep each sequence's usual ordering, with some sequences fully random
  ("wild"); normal enhancing structures on T1c (falx, sagittal sinus, cortical veins,
  choroid plexus, pituitary gland and stalk).
- Acquisition from the case's scanner profile: slice thickness and orientation, blur,
  ghosting or k-space motion, bias field, gamma, Rician noise, global scale, offset and bit depth.
- 2D pictures: plane (axial, coronal, sagittal), contrast (mostly T1c for tumours, any for
  no tumour), size, aspect, zoom, small rotation, windowing, JPEG quality or PNG.

## Layout

- `brats/<id>/<id>-t1n.nii.gz`, `-t1c`, `-t2w`, `-t2f`: T1, T1 contrast-enhanced, T2, FLAIR
  ({n_cases} cases, BraTS 2023 naming, {shape[0]}x{shape[1]}x{shape[2]} voxels at {spacing:g} mm,
  RAS affine, skull-stripped: background is 0).
- `brats/<id>/<id>-seg.nii.gz`: uint8 labels, 1 necrotic / non-enhancing core, 2 edema, 3 enhancing tumour.
- `brats/tumor_types.csv`: `case_id,tumor_type` (glioma, meningioma, pituitary, no_tumor, metastasis).
- `brats/{CASES_JSONL}`: one JSON object per case: anatomy, scanner profile, domain, lesions,
  volumes, class intensities and the acquisition of every sequence.
- `kaggle/<class>/<id>_<n>.jpg` (some `.png`): up to {slices_per_case} 8-bit 2D picture(s) per case
  in a real head, all three planes, in the public Kaggle class folders `glioma`,
  `meningioma`, `pituitary`, `notumor`.

## Bigger sets

Training and test sets are the same command with more cases and different seeds (different
warps, tumours, contrasts and scanners); `--start-index` keeps case ids apart as well. Every
set reuses the same real brains, so only a left-out anatomy is a brain the model never saw:

    brain-tumor sample-data /data/train --cases 200 --seed 101 --spacing 2
    brain-tumor sample-data /data/test --cases 40 --seed 202 --spacing 2 --start-index 10000

Leave one anatomy out (train without it, test on it alone):

    brain-tumor sample-data /data/train-no-colin --cases 200 --seed 101 --spacing 2 --exclude-anatomy colin27
    brain-tumor sample-data /data/test-colin --cases 40 --seed 202 --spacing 2 --anatomies colin27 --start-index 10000

`brain-tumor import DIR STUDIES` turns each folder into a datastore. A 1 mm case (the default
spacing, 240x240x155) has eight times the voxels of a 2 mm one.

`--domain standard|wild|mixed` sets the contrast randomisation, `--profiles site_a:0.8,site_b:0.2`
the scanner mix, `--metastasis-fraction` the share of metastasis cases.
"""
