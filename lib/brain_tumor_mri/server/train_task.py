"""MONAI Label train tasks: ``POST /train/{model}`` runs the same code as ``brain-tumor train``.

The request is turned into the CLI's own arguments and parsed by the CLI's parser, so the
server and the command line share one implementation (and one set of checks). Stats come
from the newest run's ``result.json``, which Slicer's accuracy bar reads as best_metric.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from monailabel.interfaces.tasks.train import TrainTask

from ..config import AppConfig
from ..layout import published_dir

logger = logging.getLogger(__name__)

#: request key -> CLI flag (keys Slicer's train panel sends back from ``config()``)
REQUEST_FLAGS = {
    "max_epochs": "--epochs",
    "lr": "--lr",
    "val_fraction": "--val-fraction",
    "patience": "--patience",
    "init": "--init",
    "seed": "--seed",
}

#: request keys only some models take (``nproc``: data-parallel worker processes)
MODEL_REQUEST_FLAGS = {"segmentation": {"nproc": "--nproc"}}


def nproc_from_multi_gpu(request: dict[str, Any]) -> dict[str, Any]:
    """``{"multi_gpu": true}`` without ``nproc`` -> one worker per visible CUDA GPU."""
    if not request.get("multi_gpu") or request.get("nproc") not in (None, ""):
        return request
    import torch

    return {**request, "nproc": max(1, torch.cuda.device_count())}


class ModelTrainTask(TrainTask):
    """Fine-tunes one model (``segmentation`` or ``classification``) from the datastore."""

    def __init__(self, cfg: AppConfig, model: str, description: str) -> None:
        super().__init__(description)
        self.cfg = cfg
        self.model = model

    def config(self) -> dict[str, Any]:
        return {
            "max_epochs": self.cfg.train_epochs,
            "lr": self.cfg.train_lr,
            "val_fraction": self.cfg.train_val_fraction,
            "patience": self.cfg.train_patience,
            "init": "auto",
        }

    def cli_args(self, request: dict[str, Any]) -> list[str]:
        """The ``brain-tumor train`` arguments equivalent to a MONAI Label request."""
        args = [self.model, str(self.cfg.studies)]
        flags = {**REQUEST_FLAGS, **MODEL_REQUEST_FLAGS.get(self.model, {})}
        if "nproc" in flags:
            request = nproc_from_multi_gpu(request)
        for key, flag in flags.items():
            if request.get(key) not in (None, ""):
                args += [flag, str(request[key])]
        if self.cfg.device != "auto":
            args += ["--device", self.cfg.device]
        return args

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any]:
        from ..commands import train as train_cli

        parser = argparse.ArgumentParser(prog="brain-tumor train")
        train_cli.add_arguments(parser)
        args = parser.parse_args(self.cli_args(request))
        logger.info("training %s: brain-tumor train %s", self.model, " ".join(self.cli_args(request)))
        code = train_cli.run(args)
        if code not in (0, 3):
            raise RuntimeError(f"{self.model} training failed with exit code {code}")
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
        return {
            "best_metric": res.get("best_metric"),
            "total_time": f"{res.get('seconds', 0)} s",
            "epochs": res.get("epochs_run"),
            "best_epoch": res.get("best_epoch"),
            "status": res.get("status"),
            "published": res.get("published"),
            "decision": res.get("decision"),
            "model_version": res.get("version"),
            "val_metrics": res.get("val_metrics"),
        }
