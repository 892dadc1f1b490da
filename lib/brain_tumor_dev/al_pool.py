"""A site-like archive for active-learning experiments, drawn from the varied generator.

A real site's archive is not a balanced benchmark: most studies come from one scanner
and protocol, a minority from others (an older magnet, a referring hospital's uploads),
a few have unusual contrast, and rare tumour types are rare. ``plan_pool`` composes such
an archive deterministically per seed, without generating anything (cheap), and
``generate`` renders one planned case with its domain recorded in its metadata
(``meta["al_domain"]``), so a simulation can report Dice per domain.

``plan_held_out`` draws a fixed evaluation set from disjoint case indices with the same
number of cases per domain, so the minority domains are measured as precisely as the
majority one. ``write_archive`` writes a planned archive in the generator's BraTS layout
(``brats/<id>/``, ``cases.jsonl``, ``tumor_types.csv``) for ``brain-tumor import``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brain_tumor_mri.data.synthetic import GeneratorOptions, SyntheticCase, generate_case, tumor_type_for, write_case

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Domain:
    """One source of studies: which brain, which scanner profile, which contrast regime."""

    name: str
    anatomy: str
    profile: str
    contrast: str  # generator domain: standard | wild | mixed
    weight: float


#: The default archive: mostly one scanner, minorities of other anatomies/scanners, a few wild contrasts.
ARCHIVE: tuple[Domain, ...] = (
    Domain("main", "mni152", "site_a", "standard", 0.70),
    Domain("scanner_b", "colin27", "site_b", "standard", 0.15),
    Domain("scanner_c", "itk_t1", "site_c", "mixed", 0.10),
    Domain("wild", "mni152", "random", "wild", 0.05),
)
#: Tumour-type mix of the archive (rare types rare); the generator's own mix is uniform.
TYPE_WEIGHTS: dict[str, float] = {
    "glioma": 0.50,
    "meningioma": 0.25,
    "no_tumor": 0.12,
    "pituitary": 0.08,
    "metastasis": 0.05,
}
#: The generator's metastasis share; the other four classes share the rest equally.
_GENERATOR_METASTASIS = 0.2
#: Held-out cases start here so they never share an index (hence a case) with a pool.
HELD_OUT_START = 100_000


@dataclass(frozen=True)
class PlannedCase:
    """A case of the archive before it is generated."""

    index: int
    domain: Domain
    tumor_type: str


def _natural_share(kind: str) -> float:
    return _GENERATOR_METASTASIS if kind == "metastasis" else (1.0 - _GENERATOR_METASTASIS) / 4.0


def _accepted(index: int, seed: int, types: dict[str, float]) -> str | None:
    """The case's tumour type if the archive keeps index ``index`` (rejection sampling), else None."""
    kind = tumor_type_for(index, seed, _GENERATOR_METASTASIS)
    ratio = {k: w / _natural_share(k) for k, w in types.items()}
    keep = ratio.get(kind, 0.0) / max(ratio.values())
    return kind if np.random.default_rng([seed, index, 4111]).random() < keep else None


def _domain_for(index: int, seed: int, domains: tuple[Domain, ...]) -> Domain:
    weights = np.array([d.weight for d in domains], np.float64)
    return domains[int(np.random.default_rng([seed, index, 4099]).choice(len(domains), p=weights / weights.sum()))]


def plan_pool(
    n: int, seed: int, start: int = 0, domains: tuple[Domain, ...] = ARCHIVE, types: dict[str, float] | None = None
) -> list[PlannedCase]:
    """``n`` archive cases from index ``start`` on: domains by weight, tumour types by ``types``."""
    types = TYPE_WEIGHTS if types is None else types
    out: list[PlannedCase] = []
    index = start
    while len(out) < n:
        kind = _accepted(index, seed, types)
        if kind is not None:
            out.append(PlannedCase(index, _domain_for(index, seed, domains), kind))
        index += 1
    return out


def plan_held_out(
    per_domain: int, seed: int, domains: tuple[Domain, ...] = ARCHIVE, types: dict[str, float] | None = None
) -> list[PlannedCase]:
    """``per_domain`` cases of every domain from indices disjoint from any pool (fixed per seed)."""
    types = TYPE_WEIGHTS if types is None else types
    out: list[PlannedCase] = []
    index = HELD_OUT_START
    for domain in domains:
        got = 0
        while got < per_domain:
            kind = _accepted(index, seed, types)
            if kind is not None:
                out.append(PlannedCase(index, domain, kind))
                got += 1
            index += 1
    return out


def generate(case: PlannedCase, seed: int, spacing: float) -> SyntheticCase:
    """Render a planned case; its metadata records the archive domain (``al_domain``)."""
    opts = GeneratorOptions(
        anatomies=(case.domain.anatomy,), domain=case.domain.contrast, metastasis_fraction=_GENERATOR_METASTASIS
    )
    out = generate_case(case.index, seed, spacing, options=opts, anatomy=case.domain.anatomy,
                        profile=case.domain.profile)  # fmt: skip
    out.meta["al_domain"] = case.domain.name
    return out


def composition(cases: list[PlannedCase]) -> dict[str, dict[str, int]]:
    """Counts by domain and by tumour type (for logs and the summary)."""
    by_domain: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for c in cases:
        by_domain[c.domain.name] = by_domain.get(c.domain.name, 0) + 1
        by_type[c.tumor_type] = by_type.get(c.tumor_type, 0) + 1
    return {"domain": dict(sorted(by_domain.items())), "tumor_type": dict(sorted(by_type.items()))}


def write_archive(out: Path, n: int, seed: int, spacing: float) -> list[dict]:
    """Generate and write ``n`` archive cases in the generator's BraTS layout; their metadata."""
    brats = Path(out) / "brats"
    brats.mkdir(parents=True, exist_ok=True)
    metas = []
    for planned in plan_pool(n, seed):
        case = generate(planned, seed, spacing)
        write_case(case, brats)
        metas.append(case.meta)
        logger.info("%s: %s, %s", case.case_id, planned.domain.name, case.tumor_type)
    with open(brats / "cases.jsonl", "w", encoding="utf-8") as fp:
        fp.writelines(json.dumps(m, sort_keys=True) + "\n" for m in metas)
    with open(brats / "tumor_types.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["case_id", "tumor_type"])
        writer.writerows([m["case_id"], m["tumor_type"]] for m in metas)
    return metas


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``brain-tumor-dev al-archive OUT``: size, seed and spacing of the archive."""
    p.add_argument("out", type=Path, help="output folder (brats/ with cases.jsonl recording al_domain)")
    p.add_argument("--cases", type=int, default=80, help="archive size (default: 80)")
    p.add_argument("--seed", type=int, default=0, help="seed; same seed, same archive (default: 0)")
    p.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default: 2)")


def run(args: argparse.Namespace) -> int:
    """Write the archive and log its composition."""
    metas = write_archive(args.out, args.cases, args.seed, args.spacing)
    logger.info("wrote %d cases to %s: %s", len(metas), args.out, composition(plan_pool(args.cases, args.seed)))
    return 0
