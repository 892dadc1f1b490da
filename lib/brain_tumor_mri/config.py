"""The app's one typed configuration, parsed once from MONAI Label ``--conf`` strings.

``AppConfig.from_conf`` is the only place ``conf`` values are read. Unknown keys and bad
values raise ``ValueError`` naming the key and what is allowed, so a typo on the command
line fails at start instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MODELS = ("segmentation", "classification")
#: Keys MONAI Label itself reads from ``conf``; accepted and passed through untouched.
MONAILABEL_KEYS = ("server_mode", "auth_token", "zoo_repo", "zoo_source", "preload")


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"--conf {key} {value!r}: expected true or false")


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(key: str, value: str) -> str:
        v = value.strip().lower()
        if v not in allowed:
            raise ValueError(f"--conf {key} {value!r}: expected one of {', '.join(allowed)}")
        return v

    return parse


def _number(kind: type, lo: float, hi: float) -> Callable[[str, str], Any]:
    def parse(key: str, value: str) -> Any:
        try:
            v = kind(value)
        except ValueError:
            raise ValueError(f"--conf {key} {value!r}: expected a {kind.__name__}") from None
        if not lo <= v <= hi:
            raise ValueError(f"--conf {key} {value!r}: expected a value in [{lo}, {hi}]")
        return v

    return parse


def _patch(key: str, value: str) -> int:
    v = _number(int, 0, 512)(key, value)
    if v % 16:
        raise ValueError(f"--conf {key} {value!r}: expected 0 or a multiple of 16")
    return int(v)


def _text(key: str, value: str) -> str:
    return value.strip()


def _sequence_map(key: str, value: str) -> str:
    """``dicom_sequence_map``: checked now (bad regex or key fails at start), kept as given."""
    from .dicom.sequences import parse_sequence_map

    try:
        parse_sequence_map(value)
    except ValueError as exc:
        raise ValueError(f"--conf {key} {value!r}: {exc}") from None
    return value.strip()


def _qido_filters(key: str, value: str) -> str:
    """``pacs_query``: ``Attribute=value,...`` QIDO-RS filters (DICOM keywords)."""
    for entry in (e for e in value.split(",") if e.strip()):
        name, sep, _ = entry.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name.strip()):
            raise ValueError(f"--conf {key} {value!r}: entry {entry!r} is not KEYWORD=VALUE")
    return value.strip()


def _path(key: str, value: str) -> Path | None:
    return Path(value).expanduser().resolve() if value.strip() else None


def _models(key: str, value: str) -> tuple[str, ...]:
    names = [m.strip() for m in value.split(",") if m.strip()]
    if names == ["all"]:
        return MODELS
    bad = [m for m in names if m not in MODELS]
    if bad or not names:
        raise ValueError(f"--conf {key} {value!r}: unknown model(s) {bad}; expected 'all' or any of {MODELS}")
    return tuple(dict.fromkeys(names))


def _training_keys() -> dict[str, tuple[str, Callable[[str, str], Any], str]]:
    """The ``--conf`` keys of training (and of the inference memory budget it shares)."""
    return {
        "train_epochs": ("train_epochs", _number(int, 1, 10_000), "default max epochs for a training run"),
        "train_lr": ("train_lr", _number(float, 1e-7, 1.0), "fine-tuning learning rate"),
        "train_val_fraction": ("train_val_fraction", _number(float, 0.0, 0.9), "validation split, by case"),
        "train_patience": ("train_patience", _number(int, 1, 10_000), "early-stopping patience in epochs"),
        "train_amp": ("train_amp", _bool, "mixed precision (GPU) / bf16 (CPU) in training"),
        "train_batch_size": (
            "train_batch_size",
            _number(int, 0, 1024),
            "samples per step; 0 = auto (CPU: 2 patches / 16 images; GPU: the largest that fits)",
        ),
        "train_patch": (
            "train_patch",
            _patch,
            "segmentation training patch edge (voxels, multiple of 16); 0 = 96 at >= 2 mm, 128 finer",
        ),
        "train_fg_fraction": (
            "train_fg_fraction",
            _number(float, 0.0, 1.0),
            "share of training patches centred on tumour (foreground oversampling)",
        ),
        "train_domain_random": (
            "train_domain_random",
            _number(float, 0.0, 2.0),
            "strength of the SynthSeg-style domain randomisation in training; 0 = off",
        ),
        "train_workers": (
            "train_workers",
            _number(int, -1, 64),
            "DataLoader worker processes; -1 = half the CPU cores (at most 8)",
        ),
        "train_cache_dir": (
            "train_cache_dir",
            _text,
            "folder of the preprocessed-case cache; empty = <studies>/model/cache",
        ),
        "train_cache_ram_mb": (
            "train_cache_ram_mb",
            _number(float, 0.0, 1e7),
            "hold a run's preprocessed cases in RAM only when they fit this (MB); else stream from disk",
        ),
        **_adapt_keys(),
        "infer_memory_mb": (
            "infer_memory_mb",
            _number(float, 1.0, 1e7),
            "segmentation: one full-volume pass when its estimated memory fits (MB), else sliding window",
        ),
    }


def _adapt_keys() -> dict[str, tuple[str, Callable[[str, str], Any], str]]:
    """The ``--conf`` keys of site adaptation (fine-tuning the served model on a site's corrections)."""
    return {
        "train_adapt": (
            "train_adapt",
            _bool,
            "fine-tuning the served segmentation model uses the site-adaptation recipe and the "
            "cross-validated publish decision (training/adapt.py)",
        ),
        "train_cv_folds": (
            "train_cv_folds",
            _number(int, 2, 10),
            "site adaptation: folds over the labelled cases for the publish decision (at most one per case)",
        ),
        "train_publish_margin": (
            "train_publish_margin",
            _number(float, 0.0, 0.2),
            "site adaptation: publish when the cross-validated mean Dice gain over the served model exceeds this",
        ),
        "train_original_max_drop": (
            "train_original_max_drop",
            _number(float, 0.0, 1.0),
            "site adaptation: refuse a model whose mean Dice on held-out original-domain cases drops by more",
        ),
        "train_replay_studies": (
            "train_replay_studies",
            _text,
            "labelled datastore of the served model's original domain, replayed while adapting; empty = no replay",
        ),
        "train_replay_fraction": (
            "train_replay_fraction",
            _number(float, 0.0, 0.9),
            "site adaptation: share of training patches drawn from the replay datastore",
        ),
        "train_replay_check": (
            "train_replay_check",
            _number(int, 0, 64),
            "site adaptation: replay cases held out (never trained on) to check the original domain",
        ),
        "train_adapt_minutes": (
            "train_adapt_minutes",
            _number(float, 0.0, 7 * 24 * 60.0),
            "site adaptation: wall-time budget of all its runs (folds + final), split evenly; 0 = none",
        ),
    }


@dataclass(frozen=True)
class AppConfig:
    """Everything the app's tasks need; built once in ``main.py`` and passed down."""

    app_dir: Path | None  # the MONAI Label app folder when running in the server, else None
    studies: Path
    weights_dir: Path  # shipped weights (see ``default_weights_dir``)
    models: tuple[str, ...] = MODELS
    device: str = "auto"  # auto | cpu | cuda
    bf16: str = "auto"  # auto | on | off: bf16 autocast on CPUs with native support
    seg_spacing: float = 2.0  # mm, isotropic working resolution of the segmentation network
    max_voxels: int = 64_000_000  # refuse volumes far larger than any brain MRI (4x ~ BraTS x 7)
    allow_missing_sequences: bool = False  # zero-fill missing sequences instead of refusing
    infer_concurrency: int = 1  # concurrent forward passes; more requests queue or get 503
    max_queue: int = 8  # inference requests waiting beyond that are refused with 503
    train_epochs: int = 20
    train_lr: float = 2e-4
    train_val_fraction: float = 0.2
    train_patience: int = 8
    train_amp: bool = True
    train_batch_size: int = 0  # 0: auto (CPU 2 patches / 16 images; GPU: as many as fit)
    train_patch: int = 0  # segmentation patch edge in voxels; 0: 96 at >= 2 mm, else 128
    train_fg_fraction: float = 0.5  # share of patches centred on tumour (nnU-Net style oversampling)
    train_domain_random: float = 1.0  # strength of SynthSeg-style domain randomisation; 0 = off
    train_workers: int = -1  # DataLoader worker processes; -1: half the CPU cores (at most 8)
    train_cache_dir: str = ""  # preprocessed-case cache; "": <studies>/model/cache
    train_cache_ram_mb: float = 1024.0  # keep the run's cases in RAM only when they fit this
    train_adapt: bool = True  # fine-tuning the served segmentation model: site-adaptation recipe + CV decision
    train_cv_folds: int = 3
    train_publish_margin: float = 0.01
    train_original_max_drop: float = 0.02
    train_replay_studies: str = ""
    train_replay_fraction: float = 0.25
    train_replay_check: int = 4
    train_adapt_minutes: float = 4.0
    infer_memory_mb: float = 2048.0  # full-volume pass when its estimate fits, else sliding window
    mc_samples: int = 3  # MC-dropout passes: 3 keeps scoring within 5x a plain inference (measured 4.3x)
    tta_samples: int = 4  # flips for test-time-augmentation scoring
    al_clusters: int = 8  # feature clusters of the "diverse" next-sample strategy
    seed: int = 0
    max_upload_mb: int = 512  # largest request body (a 4-sequence BraTS case is ~40 MB gzipped)
    auth_download_grant_s: float = 60.0  # with auth on: Slicer's header-less Next Sample download window
    # PACS (``--studies http(s)://.../dicom-web``); credentials come from the environment only
    pacs_url: str | None = None  # the DICOMweb base URL, when --studies is one; ``studies`` is then its cache
    pacs_cache: Path | None = None  # where PACS studies are cached (default under ~/.cache)
    pacs_timeout: float = 30.0  # seconds one PACS request may take before the PACS counts as unavailable
    pacs_query: str = "ModalitiesInStudy=MR"  # QIDO-RS filters choosing which studies are cases
    pacs_max_studies: int = 1000
    pacs_refresh_s: float = 60.0  # how long a study list from the PACS is reused
    dicom_sequence_map: str = ""  # REGEX=KEY,... site mapping of series names to sequences
    passthrough: dict[str, str] = field(default_factory=dict)

    # key -> (field name, parser, help)
    @staticmethod
    def keys() -> dict[str, tuple[str, Callable[[str, str], Any], str]]:
        return {
            "models": ("models", _models, "models to serve: all, or a comma list of segmentation,classification"),
            "device": ("device", _choice("auto", "cpu", "cuda"), "where to run networks (auto picks cuda if present)"),
            "bf16": ("bf16", _choice("auto", "on", "off"), "bf16 autocast on the CPU (auto: when the CPU supports it)"),
            "seg_spacing": (
                "seg_spacing",
                _number(float, 0.5, 4.0),
                "working resolution (mm) for a segmentation model trained from scratch; "
                "served weights use the spacing in their sidecar",
            ),
            "max_voxels": (
                "max_voxels",
                _number(int, 1_000, 1_000_000_000),
                "largest accepted volume (voxels x sequences)",
            ),
            "allow_missing_sequences": (
                "allow_missing_sequences",
                _bool,
                "zero-fill missing sequences instead of a 4xx",
            ),
            "infer_concurrency": ("infer_concurrency", _number(int, 1, 16), "concurrent inference passes"),
            "max_queue": ("max_queue", _number(int, 0, 1000), "waiting inference requests before 503"),
            **_training_keys(),
            "mc_samples": ("mc_samples", _number(int, 2, 32), "Monte-Carlo dropout passes for epistemic scoring"),
            "tta_samples": ("tta_samples", _number(int, 2, 8), "augmented passes for TTA scoring"),
            "al_clusters": (
                "al_clusters",
                _number(int, 1, 256),
                "feature clusters of the diverse next-sample strategy (uncertainty mixed with diversity)",
            ),
            "seed": ("seed", _number(int, 0, 2**31 - 1), "random seed for training and the random strategy"),
            "max_upload_mb": (
                "max_upload_mb",
                _number(int, 1, 65_536),
                "largest request body in MB; larger uploads get 413 before they are stored",
            ),
            "auth_download_grant_s": (
                "auth_download_grant_s",
                _number(float, 0.0, 3600.0),
                "with auth on: seconds in which the client that got a Next Sample may download that one image "
                "without a token header (Slicer does so); 0 turns it off",
            ),
            "pacs_cache": (
                "pacs_cache",
                _path,
                "folder caching PACS studies (default ~/.cache/brain-tumor-mri/pacs/<URL hash>)",
            ),
            "pacs_timeout": ("pacs_timeout", _number(float, 1.0, 600.0), "seconds a PACS request may take (then 503)"),
            "pacs_query": ("pacs_query", _qido_filters, "QIDO-RS filters (KEYWORD=VALUE,...) selecting the studies"),
            "pacs_max_studies": ("pacs_max_studies", _number(int, 1, 100_000), "most PACS studies listed"),
            "pacs_refresh_s": ("pacs_refresh_s", _number(float, 0.0, 86_400.0), "seconds a PACS study list is reused"),
            "dicom_sequence_map": (
                "dicom_sequence_map",
                _sequence_map,
                "REGEX=KEY,... (or JSON) mapping series description/protocol to t1n, t1c, t2w, t2f or ignore",
            ),
        }

    @classmethod
    def from_conf(
        cls,
        conf: dict[str, str] | None,
        app_dir: str | Path | None,
        studies: str | Path,
        weights_dir: str | Path | None = None,
    ) -> AppConfig:
        """Parse MONAI Label's ``--conf`` dict; reject unknown keys naming them."""
        conf = dict(conf or {})
        table = cls.keys()
        unknown = sorted(k for k in conf if k not in table and k not in MONAILABEL_KEYS)
        if unknown:
            raise ValueError(f"unknown --conf key(s) {unknown}; known keys: {sorted(table)}")
        values: dict[str, Any] = {}
        for key, raw in conf.items():
            if key in table:
                name, parse, _ = table[key]
                values[name] = parse(key, str(raw))
        app = Path(app_dir).resolve() if app_dir is not None else None
        passthrough = {k: str(v) for k, v in conf.items() if k in MONAILABEL_KEYS}
        url = str(studies).strip()
        if url.startswith(("http://", "https://")):  # a PACS: the datastore folder is its local cache
            if "@" in url.split("/")[2]:
                raise ValueError(
                    "--studies: put PACS credentials in MONAI_LABEL_DICOMWEB_USERNAME / MONAI_LABEL_DICOMWEB_PASSWORD, "
                    "not in the URL (it is logged)"
                )
            values["pacs_url"] = url.rstrip("/")
            studies = values.get("pacs_cache") or default_pacs_cache(values["pacs_url"])
        return cls(
            app_dir=app,
            studies=Path(studies).resolve(),
            weights_dir=Path(weights_dir).resolve() if weights_dir else default_weights_dir(app),
            passthrough=passthrough,
            **values,
        )

    def replace(self, **changes: Any) -> "AppConfig":
        return dataclasses.replace(self, **changes)

    def qido_filters(self) -> dict[str, str]:
        """``pacs_query`` as a dict of QIDO-RS search filters."""
        pairs = (e.partition("=") for e in self.pacs_query.split(",") if e.strip())
        return {k.strip(): v.strip() for k, _, v in pairs}


def default_pacs_cache(url: str) -> Path:
    """``~/.cache/brain-tumor-mri/pacs/<12 hex of the URL>``: one cache per PACS, never shared."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return Path.home() / ".cache" / "brain-tumor-mri" / "pacs" / digest


#: Environment variable naming the folder of shipped weights (``<name>.pt`` + ``<name>.json``).
WEIGHTS_ENV = "BRAIN_TUMOR_WEIGHTS_DIR"


def default_weights_dir(app_dir: Path | None = None) -> Path:
    """Where the shipped weights are: ``$BRAIN_TUMOR_WEIGHTS_DIR``, else ``model_weights/`` of the checkout.

    The checkout is the one holding the app folder (``<repo>/apps/brain_tumor``) or, when
    the package runs from a source tree, the one holding ``lib/``. An installed wheel has
    no checkout: then the variable (or ``--weights-dir``) must say where the weights are,
    and a missing folder is reported when a model is first needed.
    """
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).resolve()
    candidates = [app_dir.parent.parent / "model_weights"] if app_dir is not None else []
    candidates.append(Path(__file__).resolve().parents[2] / "model_weights")
    return next((c for c in candidates if c.is_dir()), candidates[0]).resolve()


def conf_table_markdown() -> str:
    """The README's ``--conf`` table, generated from the parser so they cannot disagree."""
    defaults = {f.name: f.default for f in dataclasses.fields(AppConfig)}
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, (name, _, help_) in AppConfig.keys().items():
        default = defaults[name]
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append(f"| `{key}` | `{default}` | {help_} |")
    return "\n".join(rows)
