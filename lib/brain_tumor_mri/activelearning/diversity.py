"""Uncertainty with diversity: which unlabelled case to serve next, given features and scores.

Pure uncertainty ranking has two failure modes on a real archive: it serves outliers (a
corrupt or exotic scan is maximally uncertain but teaches little about the site's cases)
and near-duplicates (ten follow-ups of one patient are equally uncertain and get served
one after another). This module mixes uncertainty with diversity in the network's own
feature space:

1. Each case is described by the segmentation network's bottleneck activations averaged
   over the volume (``pooled_features``), computed at scoring time and stored beside the
   scores.
2. All described cases (unlabelled candidates and cases already labelled or handed out)
   are clustered with k-means (``kmeans``, seeded, deterministic).
3. Each cluster deserves a share of the labels proportional to its *uncertainty mass*
   (its size times the mean uncertainty of its unlabelled members). The next case comes
   from the cluster furthest below its share given what is already labelled or reserved
   (``select``). A small outlier cluster has little mass, so it waits; a cluster that was
   just served has less deficit, so its duplicates wait.
4. Inside the chosen cluster the case with the highest uncertainty *discounted by its
   distance to the centroid* wins, so the typical uncertain case beats the odd one.

Every pick carries its reason (score, cluster, cluster size, labelled in cluster,
distance, deficit) for the "Next sample" answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Digits kept when feature vectors are stored in the datastore's JSON.
FEATURE_DIGITS = 4
_EPS = 1e-8


def bottleneck_module(network: torch.nn.Module) -> torch.nn.Module:
    """The deepest block of a MONAI ``UNet`` (the submodule of its innermost skip connection)."""
    from monai.networks.layers.simplelayers import SkipConnection

    skips = [m for m in network.modules() if isinstance(m, SkipConnection)]
    if not skips:
        raise ValueError(f"{type(network).__name__} has no skip connections: no U-Net bottleneck to describe cases")
    return skips[-1].submodule  # modules() lists outer blocks first, so the last is innermost


def pooled_features(segmenter: Any, image: torch.Tensor, model: Any) -> np.ndarray:
    """Bottleneck activations of one deterministic pass, averaged over space (and windows).

    A forward hook sums the spatial mean of every bottleneck output the pass produces (one
    for a full-volume pass, one per window for sliding windows) and returns their mean.
    """
    sums: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        sums.append(output.detach().float().mean(dim=tuple(range(2, output.ndim))).sum(dim=0).cpu())

    handle = bottleneck_module(model.network).register_forward_hook(hook)
    try:
        segmenter.forward(image, model=model)
    finally:
        handle.remove()
    if not sums:
        raise RuntimeError("the bottleneck produced no output during the pass")
    return (torch.stack(sums).mean(dim=0)).numpy().astype(np.float64)


def round_features(vector: np.ndarray) -> list[float]:
    """A JSON-friendly, rounded copy of a feature vector."""
    return [round(float(v), FEATURE_DIGITS) for v in vector]


def standardize(x: np.ndarray) -> np.ndarray:
    """Centred and divided by one overall scale (root mean variance), keeping the geometry.

    One scale for all channels rather than one per channel: a near-constant channel is
    mostly noise, and giving it unit variance would let noise drive the clusters.
    """
    centred = x - x.mean(axis=0)
    scale = float(np.sqrt((centred**2).mean() * x.shape[1])) if x.size else 0.0
    return centred / scale if scale > _EPS else centred


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; returns (assignment per row, centroids).

    Deterministic for a given ``seed`` and row order, so every request clusters the same
    stored features the same way.
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rng = np.random.default_rng(seed)
    centres = [x[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centres.append(x[int(rng.choice(n, p=d2 / total))] if total > _EPS else x[int(rng.integers(n))])
    c = np.array(centres)
    assign = np.zeros(n, dtype=int)
    for it in range(iterations):
        new = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if np.any(assign == j):
                c[j] = x[assign == j].mean(axis=0)
    return assign, c


@dataclass(frozen=True)
class Pick:
    """The chosen case and why: its score and its cluster's standing."""

    case_id: str
    score: float
    cluster: int
    cluster_size: int
    cluster_labelled: int  # labelled or reserved cases in the cluster before this pick
    distance: float  # to the cluster centroid, in units of the pool's feature spread
    deficit: float  # labels the cluster is short of its uncertainty-mass share

    def reason(self) -> dict[str, Any]:
        """The keys added to the "Next sample" answer."""
        return {
            "score": self.score,
            "cluster": self.cluster,
            "cluster_size": self.cluster_size,
            "cluster_labelled": self.cluster_labelled,
            "distance": round(self.distance, 4),
            "deficit": round(self.deficit, 4),
        }


def select(
    scores: Mapping[str, float],
    features: Mapping[str, np.ndarray],
    covered: set[str],
    n_clusters: int,
    seed: int = 0,
) -> Pick:
    """The next case among ``scores``' ids (candidates), balancing uncertainty and diversity.

    ``features`` describe candidates and ``covered`` cases (labelled or reserved); a
    covered case without features is ignored, every candidate must have features.
    """
    cands = sorted(scores)
    if not cands:
        raise ValueError("no candidate to select from")
    missing = [i for i in cands if i not in features]
    if missing:
        raise ValueError(f"candidates without features: {missing[:5]}")
    done = sorted(i for i in covered if i in features and i not in scores)
    ids = cands + done
    x = standardize(np.array([np.asarray(features[i], np.float64) for i in ids]))
    assign, centres = kmeans(x, min(n_clusters, len(ids)), seed)
    dist = np.linalg.norm(x - centres[assign], axis=1)
    u = np.array([max(float(scores[i]), 0.0) for i in cands])
    nc = len(cands)
    deficits = _deficits(assign, u, nc, len(centres))
    open_clusters = sorted({int(a) for a in assign[:nc]})
    best_u = {j: float(u[assign[:nc] == j].max()) for j in open_clusters}
    chosen = max(open_clusters, key=lambda j: (round(float(deficits[j]), 9), best_u[j], -j))
    members = [i for i in range(nc) if assign[i] == chosen]
    spread = max(float(dist[assign == chosen].mean()), _EPS)
    value = {i: u[i] / (1.0 + dist[i] / spread) for i in members}
    winner = max(members, key=lambda i: (value[i], u[i], -i))  # ties: the lower id (rows are sorted)
    return Pick(
        cands[winner],
        float(scores[cands[winner]]),
        chosen,
        int((assign == chosen).sum()),
        int((assign[nc:] == chosen).sum()),
        float(dist[winner]),
        float(deficits[chosen]),
    )


def _deficits(assign: np.ndarray, u: np.ndarray, n_candidates: int, k: int) -> np.ndarray:
    """Per cluster: its uncertainty-mass share of (covered + 1) labels minus its covered count.

    Mass = cluster size x mean uncertainty of its candidates (covered cases have no
    current score); with no uncertainty anywhere, mass falls back to size.
    """
    sizes = np.bincount(assign, minlength=k).astype(np.float64)
    cand = assign[:n_candidates]
    sum_u = np.bincount(cand, weights=u, minlength=k)
    n_cand = np.bincount(cand, minlength=k)
    mean_u = np.divide(sum_u, n_cand, out=np.zeros(k), where=n_cand > 0)
    mass = sizes * mean_u
    if mass.sum() <= _EPS:
        mass = sizes.copy()
    covered = np.bincount(assign[n_candidates:], minlength=k).astype(np.float64)
    return mass / mass.sum() * (covered.sum() + 1.0) - covered
