"""Uncertainty-with-diversity selection: typical cases of under-covered clusters, not outliers or duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brain_tumor_mri.activelearning.diversity import bottleneck_module, kmeans, pooled_features, select
from brain_tumor_mri.networks.factory import build_segmentation_network


def _archive() -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Blob A: 10 near-duplicates, uncertainty 0.5; blob B: 10 cases, 0.4; one far outlier at 1.0."""
    rng = np.random.default_rng(0)
    feats, scores = {}, {}
    for i in range(10):
        feats[f"a{i:02d}"] = np.array([0.0, 0.0, 0.0]) + rng.normal(0, 0.01, 3)
        scores[f"a{i:02d}"] = 0.5 + 0.001 * i
        feats[f"b{i:02d}"] = np.array([5.0, 0.0, 0.0]) + rng.normal(0, 0.3, 3)
        scores[f"b{i:02d}"] = 0.4
    feats["out"], scores["out"] = np.array([0.0, 40.0, 0.0]), 1.0
    return scores, feats


def _serve(scores: dict[str, float], feats: dict[str, np.ndarray], n: int, covered: set[str]) -> list[str]:
    """Serve ``n`` cases one at a time, each served case counting as covered (reserved)."""
    served: list[str] = []
    for _ in range(n):
        left = {i: s for i, s in scores.items() if i not in covered and i not in served}
        served.append(select(left, feats, covered | set(served), n_clusters=3).case_id)
    return served


def test_pure_uncertainty_would_serve_the_outlier_diverse_serves_typical_cases_of_both_blobs():
    scores, feats = _archive()
    assert max(scores, key=lambda i: scores[i]) == "out"
    served = _serve(scores, feats, 4, set())
    assert "out" not in served
    assert {s[0] for s in served} == {"a", "b"}  # alternates instead of four duplicates of blob A
    assert served[0].startswith("a")  # the blob with the most uncertainty mass first


def test_reason_matches_cluster_bookkeeping_and_labelled_cases_shift_the_choice():
    scores, feats = _archive()
    first = select(scores, feats, set(), n_clusters=3)
    reason = first.reason()
    assert reason["score"] == scores[first.case_id] and reason["cluster_size"] == 10
    assert reason["cluster_labelled"] == 0 and reason["deficit"] > 0
    # Three labelled cases of blob A (not candidates any more) cover it: blob B is served.
    labelled = {"a00", "a01", "a02"}
    left = {i: s for i, s in scores.items() if i not in labelled}
    pick = select(left, feats, labelled, n_clusters=3)
    assert pick.case_id.startswith("b") and pick.cluster_labelled == 0


def test_within_a_cluster_the_typical_uncertain_case_beats_the_odd_one():
    feats = {f"c{i}": np.array([float(i % 3) * 0.1, 0.0]) for i in range(9)}
    feats["edge"] = np.array([3.0, 0.0])
    scores = {i: 0.5 for i in feats}
    scores["edge"] = 0.6  # slightly more uncertain but far from the rest
    assert select(scores, feats, set(), n_clusters=1).case_id != "edge"


def test_selection_is_deterministic_and_rejects_candidates_without_features():
    scores, feats = _archive()
    assert _serve(scores, feats, 5, set()) == _serve(scores, feats, 5, set())
    with pytest.raises(ValueError, match="without features"):
        select({"x": 1.0}, {}, set(), 2)
    with pytest.raises(ValueError, match="no candidate"):
        select({}, feats, set(), 2)


def test_kmeans_separates_blobs_and_checks_k():
    x = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 10.0)])
    assign, centres = kmeans(x, 2, seed=1)
    assert len(set(assign[:5])) == 1 and len(set(assign[5:])) == 1 and assign[0] != assign[5]
    assert sorted(centres[:, 0].tolist()) == [0.0, 10.0]
    with pytest.raises(ValueError):
        kmeans(x, 11)


def test_pooled_features_are_the_bottleneck_channels_and_deterministic():
    torch.manual_seed(0)
    net = build_segmentation_network(channels=[4, 8, 16, 32, 64], num_res_units=1).eval()

    class _Seg:  # the one call pooled_features makes on a segmenter
        def forward(self, image: torch.Tensor, model: object) -> torch.Tensor:
            with torch.no_grad():
                return net(image[None])[0]

    model = type("M", (), {"network": net})()
    image = torch.randn(4, 32, 32, 32)
    a, b = pooled_features(_Seg(), image, model), pooled_features(_Seg(), image, model)
    assert a.shape == (64,) and np.allclose(a, b)
    assert not np.allclose(a, pooled_features(_Seg(), torch.randn(4, 32, 32, 32), model))
    assert not bottleneck_module(net)._forward_hooks  # the hook is removed
    with pytest.raises(ValueError, match="no skip"):
        bottleneck_module(torch.nn.Conv3d(1, 1, 1))
