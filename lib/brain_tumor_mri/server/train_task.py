"""MONAI Label train tasks: ``POST /train/{model}`` runs ``run_training`` with the server's config.

MONAI Label runs every training in a fresh subprocess that re-imports the app with the
server's own ``--conf``, so ``self.cfg`` here is the server's parsed ``AppConfig``: the
options are built from it plus the request (checked by ``parse_train_request``), with no
detour through command-line strings, and ``run_training`` is the very call the
``brain-tumor train`` command makes. Stats come from the newest run's ``result.json``:
Slicer's accuracy bar reads ``best_metric``; ``decision`` and ``decision_basis`` say why a
model was or was not published (for site adaptation: the cross-validation folds, per-case
Dice of the served model and of each fold's candidate, the margin, the original-domain
check and the verdict; ``training.crossval``). MONAI Label prints what ``__call__``
returns into the task's log, which ``GET /train/`` serves as ``details``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from monailabel.interfaces.tasks.train import TrainTask

from ..config import AppConfig
from ..layout import published_dir
from .compat import requires

logger = logging.getLogger(__name__)


def _result_is_logged() -> bool:
    """MONAI Label's task subprocess logs the dict ``__call__`` returns (``GET /train/`` details show it)."""
    import inspect

    from monailabel.interfaces.utils import app

    source = inspect.getsource(app.save_result)
    return "Result: " in source and "json.dumps(result)" in source


requires(
    "monailabel.interfaces.utils.app.save_result logs the train task's returned stats as 'Result: <json>'",
    "server.train_task (the publish decision and its basis in GET /train/ details)",
    _result_is_logged,
)


class ModelTrainTask(TrainTask):
    """Fine-tunes one model (``segmentation`` or ``classification``) from the datastore."""

    def __init__(self, cfg: AppConfig, model: str, description: str) -> None:
        super().__init__(description)
        self.cfg = cfg
        self.model = model

    def config(self) -> dict[str, Any]:
        return {
            "max_epochs": self.cfg.train_epochs,
            "lr": self.cfg.train_lr if self.model == "segmentation" else "",
            "val_fraction": self.cfg.train_val_fraction,
            "patience": self.cfg.train_patience,
            "init": "auto",
        } | (
            {"adapt": self.cfg.train_adapt, "cv_folds": self.cfg.train_cv_folds} if self.model == "segmentation" else {}
        )

    def options(self, request: dict[str, Any] | None) -> Any:
        """The run's ``TrainOptions``: the server's config, then the request's checked keys."""
        from ..training.options import TrainOptions
        from ..training.request import parse_train_request

        return TrainOptions.from_config(self.cfg, self.model, parse_train_request(self.model, request))

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any]:
        from ..training.launch import stop_on_sigterm
        from ..training.run import run_training

        opts = self.options(request)
        logger.info("training %s with %s", self.model, opts.to_command())
        with stop_on_sigterm() as should_stop:
            run_training(opts, should_stop)
        return self.stats()

    def latest_result(self) -> dict[str, Any] | None:
        runs = sorted((published_dir(self.cfg.studies) / "runs").glob(f"{self.model}-*/result.json"))
        for path in reversed(runs):
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return None

    def stats(self) -> dict[str, Any]:
        res = self.latest_result()
        if res is None:
            return {}
        cache = res.get("cache") or {}
        return {
            "best_metric": res.get("best_metric"),
            "total_time": f"{res.get('seconds', 0)} s",
            "epochs": res.get("epochs_run"),
            "best_epoch": res.get("best_epoch"),
            "status": res.get("status"),
            "published": res.get("published"),
            "decision": res.get("decision"),
            "decision_basis": res.get("decision_basis"),
            "model_version": res.get("version"),
            "val_metrics": res.get("val_metrics"),
            "first_step_s": (res.get("timings") or {}).get("first_step_s"),
            "cache": {k: cache.get(k) for k in ("hits", "built", "entries_mb", "in_memory")} if cache else None,
        }
