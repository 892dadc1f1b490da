"""MONAI Label scoring methods that store each unlabelled case's segmentation uncertainty.

A score lives in the datastore's image info, one entry per method, so methods never
overwrite each other::

    {"scores": {"epistemic": {"score": 0.031, "model_version": "2025...-ab12cd34", "ts": 1718000000}}}

The epistemic method also stores each 3D case's pooled bottleneck features (labelled
cases too, so the ``diverse`` strategy knows what is already covered)::

    {"features": {"vector": [0.12, ...], "model_version": "2025...-ab12cd34", "ts": 1718000000}}

MONAI Label runs every scoring method in a subprocess after each "Next sample" and at
start-up, so a run skips cases already scored with the served model version and only
re-scores when training published a new model. A case that cannot be read is logged
(naming it) and skipped; the run never fails because of one bad case.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from monailabel.interfaces.tasks.scoring import ScoringMethod

from ..activelearning.diversity import pooled_features, round_features
from ..activelearning.pool import is_3d_case
from ..activelearning.uncertainty import case_uncertainty
from ..config import AppConfig
from ..imageio import load_sequences, save_nifti
from ..layout import CASES_DIR, resolve_case
from ..networks.checkpoint import sidecar_path

logger = logging.getLogger(__name__)

SCORES_KEY = "scores"
FEATURES_KEY = "features"


def served_version(store: Any) -> str | None:
    """Version of the weights that serve now, read from the sidecar (no model load)."""
    source = store.source()
    if source is None:
        return None
    try:
        return str(json.loads(sidecar_path(source).read_text(encoding="utf-8")).get("version", "unknown"))
    except (OSError, ValueError) as exc:
        logger.warning("cannot read the version of %s: %s", source, exc)
        return None


def reload_datastore(datastore: Any) -> None:
    """Re-read a local datastore's JSON if another process changed it (cheap mtime check).

    Scoring runs in a subprocess with its own datastore object: reloading before reading
    or merging a score keeps it from writing back a stale copy over labels saved meanwhile,
    and lets the server process see scores written by the subprocess.
    """
    reload = getattr(datastore, "_init_from_datastore_file", None)
    if callable(reload):
        reload()


def stored_score(info: dict[str, Any], method: str, version: str | None) -> float | None:
    """The stored score of ``method`` if it was computed with model ``version``, else None."""
    entry = (info.get(SCORES_KEY) or {}).get(method)
    if not isinstance(entry, dict) or version is None or entry.get("model_version") != version:
        return None
    try:
        return float(entry["score"])
    except (KeyError, TypeError, ValueError):
        return None


def stored_features(info: dict[str, Any], version: str | None) -> list[float] | None:
    """The stored feature vector if it was computed with model ``version``, else None."""
    entry = info.get(FEATURES_KEY)
    if not isinstance(entry, dict) or version is None or entry.get("model_version") != version:
        return None
    vector = entry.get("vector")
    if not isinstance(vector, list) or not vector:
        return None
    try:
        return [float(v) for v in vector]
    except (TypeError, ValueError):
        return None


def merge_score(datastore: Any, image_id: str, method: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` under ``scores.<method>`` keeping other methods' scores and info."""
    reload_datastore(datastore)
    scores = dict(datastore.get_image_info(image_id).get(SCORES_KEY) or {})
    scores[method] = entry
    datastore.update_image_info(image_id, {SCORES_KEY: scores})


def merge_features(datastore: Any, image_id: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` under ``features``, replacing the previous model version's vector."""
    reload_datastore(datastore)
    datastore.update_image_info(image_id, {FEATURES_KEY: entry})


class UncertaintyScoring(ScoringMethod):
    """Scores every unlabelled 3D case with one uncertainty method of ``uncertainty``.

    With ``features`` it also stores every 3D case's pooled bottleneck features (one more
    deterministic pass per case and model version) for the ``diverse`` strategy.
    """

    method = ""
    features = False

    def __init__(
        self, cfg: AppConfig, segmenter: Callable[[], Any], samples: int, description: str, save_maps: bool = True
    ) -> None:
        super().__init__(description)
        self.cfg = cfg
        self._segmenter = segmenter  # a getter, so no model loads until a scoring run
        self.samples = samples
        self.save_maps = save_maps

    def info(self) -> dict[str, Any]:
        """What ``/info`` shows for this method: description, method and number of passes."""
        return {**super().info(), "method": self.method, "samples": self.samples, "features": self.features}

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any]:
        """Score unlabelled 3D cases lacking a current-model score (all with ``force``); report ids."""
        result: dict[str, Any] = {"method": self.method, "scored": [], "skipped": 0, "failed": [], "described": []}
        segmenter = self._segmenter()
        try:
            version = segmenter.store.get().version
        except Exception as exc:  # no or unreadable weights: nothing to score with
            logger.warning("%s scoring: no usable segmentation model (%s)", self.method, exc)
            return {**result, "error": str(exc)}
        result["model_version"] = version
        force = bool(request.get("force", False))
        reload_datastore(datastore)
        for image_id in sorted(datastore.get_unlabeled_images()):
            self._run_case(datastore, image_id, segmenter, version, force, result)
        if self.features:
            for image_id in sorted(datastore.get_labeled_images()):
                self._describe_labelled(datastore, image_id, segmenter, version, result)
        logger.info(
            "%s scoring with model %s: %d scored, %d up to date, %d failed, %d labelled described",
            self.method,
            version,
            len(result["scored"]),
            result["skipped"],
            len(result["failed"]),
            len(result["described"]),
        )
        return result

    def _scorable(self, datastore: Any, image_id: str) -> bool:
        """A 3D case whose files are here (a PACS study not fetched yet is never downloaded)."""
        if not is_3d_case(self.cfg.studies, datastore, image_id):
            return False
        return bool(getattr(datastore, "is_cached", lambda _: True)(image_id))

    def _run_case(
        self, datastore: Any, image_id: str, segmenter: Any, version: str, force: bool, result: dict[str, Any]
    ) -> None:
        """Score one unlabelled case unless it is up to date; a bad case is logged and listed."""
        try:
            if not self._scorable(datastore, image_id):
                return
            info = datastore.get_image_info(image_id)
            fresh = stored_score(info, self.method, version) is not None
            if fresh and (not self.features or stored_features(info, version) is not None) and not force:
                result["skipped"] += 1
                return
            score, features = self.score_case(datastore, image_id, segmenter)
            ts = int(time.time())
            entry = {"score": score, "model_version": version, "ts": ts, "samples": self.samples}
            merge_score(datastore, image_id, self.method, entry)
            if features is not None:
                merge_features(datastore, image_id, {"vector": features, "model_version": version, "ts": ts})
            result["scored"].append(image_id)
        except Exception as exc:  # one bad case must not stop the run
            logger.warning("%s scoring: case %s skipped: %s", self.method, image_id, exc)
            result["failed"].append(image_id)

    def _describe_labelled(
        self, datastore: Any, image_id: str, segmenter: Any, version: str, result: dict[str, Any]
    ) -> None:
        """Store a labelled case's features (what the ``diverse`` strategy counts as covered)."""
        try:
            if not self._scorable(datastore, image_id):
                return
            if stored_features(datastore.get_image_info(image_id), version) is not None:
                return
            _, prepared, model = self._prepare(datastore, image_id, segmenter)
            vector = round_features(pooled_features(segmenter, prepared.image, model))
            merge_features(datastore, image_id, {"vector": vector, "model_version": version, "ts": int(time.time())})
            result["described"].append(image_id)
        except Exception as exc:  # one bad case must not stop the run
            logger.warning("%s scoring: features of labelled case %s skipped: %s", self.method, image_id, exc)
            result["failed"].append(image_id)

    def _prepare(self, datastore: Any, image_id: str, segmenter: Any) -> tuple[Any, Any, Any]:
        """(loaded sequences and affine, preprocessed case, model) for one datastore case."""
        case = resolve_case(datastore.get_image_uri(image_id))
        stack, affine, _ = load_sequences(
            case.sequences, allow_missing=self.cfg.allow_missing_sequences, max_voxels=self.cfg.max_voxels
        )
        model = segmenter.store.get()  # one model for preparation and every pass
        return (case, affine), segmenter.prepare(stack, affine, model=model), model

    def score_case(self, datastore: Any, image_id: str, segmenter: Any) -> tuple[float, list[float] | None]:
        """Load, preprocess and score one case (and describe it, with ``features``); save its map."""
        (case, affine), prepared, model = self._prepare(datastore, image_id, segmenter)
        unc = case_uncertainty(segmenter, prepared, self.method, self.samples, seed=self.cfg.seed, model=model)
        folder = Path(datastore.get_image_uri(image_id)).parent / CASES_DIR / case.case_id
        if self.save_maps and folder.is_dir():
            save_nifti(
                folder / f"uncertainty_{self.method}.nii.gz", unc.map_on_input_grid(prepared), affine, dtype="float32"
            )
        features = round_features(pooled_features(segmenter, prepared.image, model)) if self.features else None
        return round(unc.score, 8), features


class EpistemicScoring(UncertaintyScoring):
    """Monte-Carlo-dropout uncertainty: what the current model has not learned yet."""

    method = "epistemic"
    features = True

    def __init__(self, cfg: AppConfig, segmenter: Callable[[], Any], save_maps: bool = True) -> None:
        super().__init__(
            cfg,
            segmenter,
            cfg.mc_samples,
            f"Mean mutual information over the predicted tumour, {cfg.mc_samples} MC-dropout passes",
            save_maps,
        )


class TTAScoring(UncertaintyScoring):
    """Test-time-augmentation (flip) uncertainty: how unstable the prediction is."""

    method = "tta"

    def __init__(self, cfg: AppConfig, segmenter: Callable[[], Any], save_maps: bool = True) -> None:
        super().__init__(
            cfg,
            segmenter,
            cfg.tta_samples,
            f"Mean mutual information over the predicted tumour, {cfg.tta_samples} flipped passes",
            save_maps,
        )
