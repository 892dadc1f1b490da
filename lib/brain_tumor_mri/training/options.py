"""The one options object of a training run, from the server's parsed config or from the CLI.

``TrainOptions.from_config(cfg, model, request)`` takes every default from the app's typed
``AppConfig`` (the server's ``--conf``, parsed once) and applies the training request's
keys as ``request.parse_train_request`` returned them; the ``brain-tumor train`` command
builds the same object from its flags (``commands.train_common.options_from_args``).
``run_training(options)`` then does everything else, so the server and the command line
cannot drift apart. The object is frozen and picklable (worker processes receive it).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import AppConfig

#: Segmentation patch edge (voxels) when none is given: 96 at >= 2 mm, 128 finer.
PATCH_COARSE, PATCH_FINE = 96, 128

#: request key -> options field (the request's own names are Slicer's train panel's)
REQUEST_FIELDS = {"max_epochs": "epochs", "lr": "lr", "val_fraction": "val_fraction", "patience": "patience",
                  "init": "init", "seed": "seed", "nproc": "nproc", "adapt": "adapt",
                  "cv_folds": "cv_folds"}  # fmt: skip


@dataclass(frozen=True)
class TrainOptions:
    """Everything one training run needs (see module docstring); paths are resolved."""

    model: str  # segmentation | classification
    studies: Path
    weights_dir: Path  # shipped weights (``--init auto`` falls back to them)
    init: str = "auto"  # auto | none | a weights file
    out: Path | None = None  # segmentation: weights file; classification: folder (default: STUDIES/model)
    run_dir: Path | None = None  # default: STUDIES/model/runs/<model>-<time>
    epochs: int = 20
    lr: float | None = None  # None: the model's default (segmentation: train_lr)
    weight_decay: float | None = None
    patience: int = 8
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    bf16: str = "auto"
    amp: bool = True
    batch_size: int = 0  # 0: auto (CPU: 2 patches / 16 images; GPU: as many as fit)
    max_minutes: float = 0.0  # wall-time budget; the best epoch so far is kept
    nproc: int = 1  # data-parallel processes on this node (torchrun sets its own)
    workers: int = -1  # DataLoader worker processes (-1: auto)
    cache_dir: Path | None = None  # default: STUDIES/model/cache
    cache_ram_mb: float = 1024.0
    domain_random: float = 1.0  # strength; 0 = off
    allow_missing: bool = False
    infer_memory_mb: float = 2048.0  # validation uses the inference choice of full pass / sliding window
    # segmentation
    spacing: float = 2.0  # from scratch; fine-tuning keeps the initial model's
    patch: int = 0  # cubic patch edge in voxels, multiple of 16; 0: by spacing
    samples_per_epoch: int = 0  # 0: one pass over the training cases, at least 16
    fg_fraction: float = 0.5  # patches centred on tumour
    schedule: str = "cosine"  # cosine | plateau
    # classification
    kinds: tuple[str, ...] = ("2d", "3d")
    input_size: int | None = None  # from scratch only
    class_spacing: float | None = None  # from scratch only (3D)
    # a second source drawn at a fixed fraction (e.g. the original training data while fine-tuning)
    replay_studies: Path | None = None
    replay_fraction: float = 0.0
    # site adaptation (``training.adapt``): the recipe and the cross-validated publish decision
    adapt: bool = False  # applies only when fine-tuning a segmentation model
    cv_folds: int = 3
    publish_margin: float = 0.01
    original_max_drop: float = 0.02
    replay_check: int = 4  # replay cases held out to check the original domain (never trained on)
    adapt_minutes: float = 0.0  # wall-time budget of all adaptation runs together; 0 = none
    final_only: bool = False  # fixed budget: validate after the last epoch only and keep that epoch
    # fields the user set (request / CLI): the adaptation recipe leaves them alone; not a setting, so not compared
    explicit: tuple[str, ...] = field(default=(), compare=False)
    network: dict[str, Any] = field(default_factory=dict)  # scratch-only overrides of the network defaults
    store_half: bool = True  # segmentation weights stored as fp16
    command: str = ""  # the command that reproduces the run (sidecar provenance)

    @classmethod
    def from_config(cls, cfg: AppConfig, model: str, request: Mapping[str, Any] | None = None) -> TrainOptions:
        """Defaults from the app's config, then the parsed request's keys (``parse_train_request``)."""
        base = cls(
            model=model, studies=cfg.studies, weights_dir=cfg.weights_dir, epochs=cfg.train_epochs,
            lr=cfg.train_lr if model == "segmentation" else None, patience=cfg.train_patience,
            val_fraction=cfg.train_val_fraction, seed=cfg.seed, device=cfg.device, bf16=cfg.bf16, amp=cfg.train_amp,
            batch_size=cfg.train_batch_size, workers=cfg.train_workers,
            cache_dir=Path(cfg.train_cache_dir).resolve() if cfg.train_cache_dir else None,
            cache_ram_mb=cfg.train_cache_ram_mb, domain_random=cfg.train_domain_random,
            allow_missing=cfg.allow_missing_sequences, infer_memory_mb=cfg.infer_memory_mb, spacing=cfg.seg_spacing,
            patch=cfg.train_patch, fg_fraction=cfg.train_fg_fraction, adapt=cfg.train_adapt and model == "segmentation",
            cv_folds=cfg.train_cv_folds, publish_margin=cfg.train_publish_margin,
            original_max_drop=cfg.train_original_max_drop, replay_check=cfg.train_replay_check,
            adapt_minutes=cfg.train_adapt_minutes,
        )  # fmt: skip
        if cfg.train_replay_studies and model == "segmentation":
            base = base.replace(replay_studies=Path(cfg.train_replay_studies).resolve(),
                                replay_fraction=cfg.train_replay_fraction)  # fmt: skip
        changes = {REQUEST_FIELDS[k]: v for k, v in (request or {}).items() if k in REQUEST_FIELDS}
        if "max_minutes" in (request or {}):
            changes["max_minutes"] = float(request["max_minutes"])  # type: ignore[index]
        if (request or {}).get("multi_gpu") and "nproc" not in changes:
            import torch

            changes["nproc"] = max(1, torch.cuda.device_count())
        return base.replace(**changes, explicit=tuple(sorted(changes))).checked()

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def checked(self) -> TrainOptions:
        """``self`` after range checks that argparse cannot express; ``ValueError`` names the option."""
        if self.model not in ("segmentation", "classification"):
            raise ValueError(f"unknown model {self.model!r}; expected segmentation or classification")
        if self.patch < 0 or self.patch % 16:
            raise ValueError(f"patch {self.patch}: expected a positive multiple of 16 (or 0 for the default)")
        for name in ("epochs", "patience", "nproc"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: expected at least 1")
        if not 0.0 <= self.val_fraction <= 0.9:
            raise ValueError(f"val_fraction {self.val_fraction}: expected a value in [0, 0.9]")
        if not 0.0 <= self.fg_fraction <= 1.0 or not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError("fg_fraction must be in [0, 1] and replay_fraction in [0, 1)")
        if self.replay_fraction > 0 and self.replay_studies is None:
            raise ValueError("replay_fraction needs replay_studies (--replay STUDIES)")
        if self.schedule not in ("cosine", "plateau", "warmup_cosine"):
            raise ValueError(f"schedule {self.schedule!r}: expected cosine, warmup_cosine or plateau")
        if self.final_only and self.schedule == "plateau":
            raise ValueError("a fixed-budget run (final_only) cannot follow the plateau schedule: it validates once")
        if not 2 <= self.cv_folds <= 10 or self.replay_check < 0 or self.adapt_minutes < 0:
            raise ValueError("cv_folds must be in [2, 10], replay_check and adapt_minutes at least 0")
        if not set(self.kinds) <= {"2d", "3d"} or not self.kinds:
            raise ValueError(f"kinds {self.kinds}: expected 2d, 3d or both")
        if self.model == "classification" and len(self.kinds) > 1 and self.init not in ("auto", "none"):
            raise ValueError("--init WEIGHTS needs a single --kind (2d or 3d)")
        return self

    def patch_size(self, spacing: float) -> tuple[int, int, int]:
        """The cubic training patch (and sliding-window roi) at ``spacing``."""
        edge = self.patch or (PATCH_COARSE if spacing >= 2.0 else PATCH_FINE)
        return (edge, edge, edge)

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for the sidecar and ``result.json``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    def to_command(self) -> str:
        """The ``brain-tumor train`` command line that reproduces this run's options."""
        if self.command:
            return self.command
        args = ["brain-tumor", "train", self.model, str(self.studies), "--init", self.init,
                "--epochs", str(self.epochs), "--patience", str(self.patience),
                "--val-fraction", str(self.val_fraction), "--seed", str(self.seed),
                "--domain-random", str(self.domain_random)]  # fmt: skip
        if self.lr is not None:
            args += ["--lr", str(self.lr)]
        if self.batch_size:
            args += ["--batch-size", str(self.batch_size)]
        if self.model == "segmentation":
            args += ["--spacing", str(self.spacing), "--patch", str(self.patch_size(self.spacing)[0]),
                     "--fg-fraction", str(self.fg_fraction), "--schedule", self.schedule]  # fmt: skip
            if self.samples_per_epoch:
                args += ["--samples-per-epoch", str(self.samples_per_epoch)]
        else:
            args += ["--kind", "both" if len(self.kinds) == 2 else self.kinds[0]]
        if self.max_minutes:
            args += ["--max-minutes", f"{self.max_minutes:g}"]
        if self.nproc > 1:
            args += ["--nproc", str(self.nproc)]
        if self.replay_studies is not None:
            args += ["--replay", str(self.replay_studies), "--replay-fraction", str(self.replay_fraction)]
        return shlex.join(args)
