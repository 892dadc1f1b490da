"""Active-learning strategies behind Slicer's "Next sample" button.

``first`` and ``random`` are the baselines; ``UncertaintyStrategy`` serves the unlabelled
case with the highest stored score of one scoring method (see ``scoring``);
``DiverseStrategy`` mixes that score with diversity in the network's feature space
(``activelearning.diversity``). All of them serve only unlabelled 3D cases and reserve
what they serve.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
from monailabel.interfaces.tasks.strategy import Strategy

from ..activelearning.diversity import select
from ..activelearning.pool import Reservations, candidates
from .scoring import reload_datastore, stored_features, stored_score

logger = logging.getLogger(__name__)


class _PoolStrategy(Strategy):
    """Shared plumbing: candidate pool, reservation, MONAI Label's answer format."""

    def __init__(self, description: str, studies: Path, reservations: Reservations) -> None:
        super().__init__(description)
        self.studies = Path(studies)
        self.reservations = reservations

    def pick(self, ids: list[str], datastore: Any) -> tuple[str, dict[str, Any]]:
        """The case to serve among ``ids`` and the extra keys of the answer."""
        raise NotImplementedError

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any] | None:
        ids = candidates(self.studies, datastore, request, self.reservations)
        prepare = getattr(datastore, "prepare_case", None)  # a PACS datastore: fetch before serving
        while ids:
            case_id, extra = self.pick(ids, datastore)
            if prepare is None or prepare(case_id):
                break
            ids.remove(case_id)  # a study that cannot be a case (logged by the datastore): pick another
        if not ids:
            logger.info("%s: no unlabelled 3D case left", type(self).__name__)
            return None
        self.reservations.reserve(case_id)
        logger.info("%s: serving %s", type(self).__name__, case_id)
        return {"id": case_id, **extra}


class First(_PoolStrategy):
    """The first unlabelled case in id order (predictable, for demos and tests)."""

    def __init__(self, studies: Path, reservations: Reservations) -> None:
        super().__init__("First unlabelled case (by id)", studies, reservations)

    def pick(self, ids: list[str], datastore: Any) -> tuple[str, dict[str, Any]]:
        return ids[0], {}


class Random(_PoolStrategy):
    """A uniformly random unlabelled case (seeded, so runs are reproducible)."""

    def __init__(self, studies: Path, reservations: Reservations, seed: int = 0) -> None:
        super().__init__("Random unlabelled case", studies, reservations)
        self._rng = random.Random(seed)

    def pick(self, ids: list[str], datastore: Any) -> tuple[str, dict[str, Any]]:
        return self._rng.choice(ids), {}


class UncertaintyStrategy(_PoolStrategy):
    """The case with the highest stored score of ``method`` for the served model version.

    Scores come from the matching scoring method (``scoring.py``), which runs in another
    process; cases without a score for the current model rank last, ties go by id, so the
    strategy still serves something useful before the first scoring run finishes.
    """

    def __init__(
        self, studies: Path, reservations: Reservations, method: str, current_version: Callable[[], str | None]
    ) -> None:
        super().__init__(f"Most uncertain unlabelled case ({method} score)", studies, reservations)
        self.method = method
        self.current_version = current_version

    def pick(self, ids: list[str], datastore: Any) -> tuple[str, dict[str, Any]]:
        reload_datastore(datastore)
        version = self.current_version()
        scores = {i: stored_score(datastore.get_image_info(i), self.method, version) for i in ids}
        best = min(ids, key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
        if scores[best] is None:
            logger.info("%s: no case scored for model %s yet; serving by id", self.method, version)
        return best, {"score": scores[best], "method": self.method}


class DiverseStrategy(UncertaintyStrategy):
    """Uncertainty with diversity: the most uncertain typical case of the least-covered cluster.

    Clusters the stored bottleneck features of the candidates and of the cases already
    labelled or reserved (``diversity.select``), so a batch served to several annotators
    spreads over the archive instead of serving outliers or near-duplicates. Until every
    candidate has a score and features for the served model, it falls back to the plain
    uncertainty order (the answer says so in ``fallback``).
    """

    def __init__(
        self,
        studies: Path,
        reservations: Reservations,
        method: str,
        current_version: Callable[[], str | None],
        clusters: int,
        seed: int = 0,
    ) -> None:
        super().__init__(studies, reservations, method, current_version)
        self.description = f"Uncertain and diverse unlabelled case ({method} score, {clusters} feature clusters)"
        self.clusters = clusters
        self.seed = seed

    def pick(self, ids: list[str], datastore: Any) -> tuple[str, dict[str, Any]]:
        reload_datastore(datastore)
        version = self.current_version()
        infos = {i: datastore.get_image_info(i) for i in ids}
        scores = {i: stored_score(infos[i], self.method, version) for i in ids}
        features = {i: stored_features(infos[i], version) for i in ids}
        if any(scores[i] is None or features[i] is None for i in ids):
            best, extra = super().pick(ids, datastore)
            return best, {**extra, "strategy": "diverse", "fallback": "not every candidate scored and described yet"}
        covered = (set(datastore.get_labeled_images()) | self.reservations.active()) - set(ids)
        described = {i: np.asarray(v) for i, v in features.items() if v is not None}
        for case_id in covered:
            vector = stored_features(datastore.get_image_info(case_id), version)
            if vector is not None:
                described[case_id] = np.asarray(vector)
        chosen = select({i: float(s) for i, s in scores.items() if s is not None}, described, covered, self.clusters,
                        self.seed)  # fmt: skip
        return chosen.case_id, {"method": self.method, "strategy": "diverse", **chosen.reason()}
