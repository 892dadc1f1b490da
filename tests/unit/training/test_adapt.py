"""Site adaptation: the recipe, replay at the stated fraction, the cross-validated publish decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.inference.inferer import InfererSpec
from brain_tumor_mri.inference.postprocess import ComponentFilter
from brain_tumor_mri.networks.checkpoint import load_model, save_model, sidecar_path
from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.training.adapt import RECIPE, recipe_options
from brain_tumor_mri.training.adapt_run import split_replay
from brain_tumor_mri.training.cache_file import CacheEntry
from brain_tumor_mri.training.cases import REPLAY, CaseSpec, segmentation_cases
from brain_tumor_mri.training.crossval import Evidence, Fold, cross_validated_rule, make_folds
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.publish import DecisionInput, decide
from brain_tumor_mri.training.run import run_training
from brain_tumor_mri.training.seg_model import SegModel, served_filter
from brain_tumor_mri.training.step import StepContext
from brain_tumor_mri.training.store import CaseStore
from brain_tumor_mri.training.validation import SegValidation, ValScores, validate_segmentation
from tests.helpers.segmentation import SMALL_NET, SPACING, make_datastore


def _scores(mean: float) -> dict[str, float]:
    return {"wt": mean, "tc": mean, "et": mean, "mean": mean}


def _evidence(before: dict[str, float], after: dict[str, float], k: int = 2) -> Evidence:
    folds = make_folds(list(before), k, 0)
    return Evidence([Fold(i, [c for c in before if c not in held], held, {c: _scores(before[c]) for c in held},
                          {c: _scores(after[c]) for c in held}) for i, held in enumerate(folds, 1)])  # fmt: skip


def _val(mean: float, n: int = 2) -> ValScores:
    return ValScores(mean, (mean,), _scores(mean), {f"orig-{i}": _scores(mean) for i in range(n)})


def _decide(evidence: Evidence, original: tuple[float, float] | None = None, margin: float = 0.01):
    rule = cross_validated_rule(evidence, margin, 0.02, original is not None)
    initial, trained = (_val(original[0]), _val(original[1])) if original else (_val(0.5), _val(0.5))
    return decide(rule, DecisionInput("finished", initial, trained, 4, "mean Dice"))


BEFORE = {"s1": 0.60, "s2": 0.70, "s3": 0.65, "s4": 0.72}


def test_folds_cover_every_case_once() -> None:
    folds = make_folds([f"c{i}" for i in range(8)], 3, 7)
    assert sorted(c for f in folds for c in f) == sorted(f"c{i}" for i in range(8))
    assert sorted(len(f) for f in folds) == [2, 3, 3]
    assert make_folds(["a", "b"], 5, 0) == make_folds(["b", "a"], 5, 0) and len(make_folds(["a", "b"], 5, 0)) == 2


def test_refuses_a_candidate_worse_on_the_cross_validated_cases() -> None:
    decision = _decide(_evidence(BEFORE, {"s1": 0.70, "s2": 0.60, "s3": 0.55, "s4": 0.70}))
    assert not decision.publish and decision.reason.startswith("not published")
    basis = decision.basis
    assert basis["rule"] == "cross_validated" and basis["verdict"].startswith("refused")
    assert basis["n_cases"] == 4 and basis["folds"] == 2 and basis["gain"]["mean_gain"] == pytest.approx(-0.03)
    assert basis["gain"]["improved"] == 1 and basis["gain"]["worse"] == 3
    assert {c for f in basis["per_fold"] for c in f["held_out"]} == set(BEFORE)
    assert basis["original_domain"]["checked"] is False


def test_accepts_a_candidate_better_on_the_cross_validated_cases() -> None:
    decision = _decide(_evidence(BEFORE, {c: v + 0.1 for c, v in BEFORE.items()}), original=(0.80, 0.79))
    assert decision.publish and decision.basis["verdict"] == "published", decision.reason
    assert decision.basis["site_after"]["mean"] == pytest.approx(decision.basis["site_before"]["mean"] + 0.1)
    assert decision.basis["original_domain"]["drop"] == pytest.approx(0.01)
    # a gain within the margin is not enough; neither is one paid for on the original domain
    assert not _decide(_evidence(BEFORE, {c: v + 0.005 for c, v in BEFORE.items()})).publish
    forgot = _decide(_evidence(BEFORE, {c: v + 0.1 for c, v in BEFORE.items()}), original=(0.80, 0.70))
    assert not forgot.publish and forgot.basis["verdict"] == "refused: original domain dropped"


def test_recipe_scales_with_cases_and_keeps_what_the_user_set(tmp_path: Path) -> None:
    init = tmp_path / "seg.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
                                                               "spacing": SPACING, "patch": [48, 48, 48]})  # fmt: skip
    opts = TrainOptions("segmentation", tmp_path, tmp_path, adapt=True, adapt_minutes=4.0)
    one, eight = recipe_options(opts, 1, init, runs=4), recipe_options(opts, 8, init, runs=4)
    assert one.epochs * one.samples_per_epoch >= RECIPE.patches(1) and eight.epochs > one.epochs
    assert (eight.lr, eight.schedule, eight.patch, eight.final_only) == (RECIPE.lr, "warmup_cosine", 48, True)
    assert eight.max_minutes == pytest.approx(1.0)
    mine = recipe_options(opts.replace(lr=1e-5, epochs=2, explicit=("epochs", "lr")), 8, init)
    assert (mine.lr, mine.epochs) == (1e-5, 2)
    assert (eight.fg_fraction, eight.domain_random) == (opts.fg_fraction, RECIPE.domain_random)  # nothing recorded


def test_recipe_keeps_the_initial_models_sampling(tmp_path: Path) -> None:
    """Tumour share and domain randomisation come from the initial model's training record, never stronger."""
    init = tmp_path / "seg.pt"
    record = {"options": {"fg_fraction": 0.33, "domain_random": 0.25}}
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
               "spacing": SPACING, "patch": [48, 48, 48], "training": record})  # fmt: skip
    opts = TrainOptions("segmentation", tmp_path, tmp_path, adapt=True)
    assert opts.fg_fraction == 0.5
    got = recipe_options(opts, 4, init)
    assert (got.fg_fraction, got.domain_random) == (0.33, 0.25)
    mine = recipe_options(opts.replace(fg_fraction=0.6, explicit=("fg_fraction",)), 4, init)
    assert mine.fg_fraction == 0.6


def test_replay_is_mixed_in_at_the_stated_fraction(tmp_path: Path) -> None:
    studies = make_datastore(tmp_path / "site", n=3)
    original = make_datastore(tmp_path / "original", n=5)
    replay, check = split_replay(segmentation_cases(original, REPLAY), 2, 0)
    assert len(replay) == 3 and len(check) == 2 and not {s.case_id for s in replay} & {s.case_id for s in check}
    opts = TrainOptions("segmentation", studies, tmp_path, replay_studies=original, replay_fraction=0.25, seed=3)
    plan = SegModel(opts, None).plan(segmentation_cases(studies), len(replay))
    items = [i for epoch in (1, 2) for i, _ in plan.items(epoch, 2000)]
    share = sum(i >= 3 for i in items) / len(items)
    assert share == pytest.approx(0.25, abs=0.02)
    assert {i for i in items if i >= 3} == {3, 4, 5}  # every replayed case is drawn, none of the held-out ones


def _adapt_opts(studies: Path, tmp: Path, init: Path, **kw) -> TrainOptions:
    base = dict(model="segmentation", studies=studies, weights_dir=tmp / "none", init=str(init),
                out=tmp / "model" / "segmentation.pt", run_dir=tmp / "run", cache_dir=tmp / "cache", epochs=1,
                lr=1e-12, batch_size=2, samples_per_epoch=2, device="cpu", bf16="off", patch=32, workers=0,
                seed=1, adapt=True, cv_folds=3, replay_check=1,
                explicit=("epochs", "lr", "samples_per_epoch", "patch"))  # fmt: skip
    return TrainOptions(**{**base, **kw})


def test_adaptation_cross_validates_and_refuses_an_unchanged_model(studies: Path, tmp_path: Path) -> None:
    init = tmp_path / "served.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
                                                               "spacing": SPACING})  # fmt: skip
    meta = json.loads(sidecar_path(init).read_text(encoding="utf-8"))
    meta["postprocess"] = {"min_mean_prob": {"whole_tumor": 0.6}}  # served with a filter: scores are of its answers
    sidecar_path(init).write_text(json.dumps(meta), encoding="utf-8")
    original = make_datastore(tmp_path / "original", n=3)
    opts = _adapt_opts(studies, tmp_path, init, replay_studies=original, replay_fraction=0.5)
    result = run_training(opts)  # lr 1e-12: every candidate equals the served model, so no gain
    basis = result.decision_basis
    assert not result.published and not opts.out.exists(), result.decision
    assert basis["rule"] == "cross_validated" and basis["folds"] == 3 and basis["n_cases"] == 3
    assert basis["gain"]["mean_gain"] == pytest.approx(0.0, abs=1e-6) and basis["verdict"].startswith("refused")
    assert sorted(c for f in basis["per_fold"] for c in f["held_out"]) == ["case-00", "case-01", "case-02"]
    assert basis["replay"]["replayed"] == 2 and len(basis["replay"]["held_out"]) == 1
    assert basis["scored_as"]["postprocess"] == {"whole_tumor": 0.6}
    assert basis["original_domain"]["checked"] and basis["original_domain"]["n_cases"] == 1
    assert all((tmp_path / "run" / "cv" / f"fold-{i}" / "metrics.csv").is_file() for i in (1, 2, 3))
    assert (tmp_path / "run" / "result.json").is_file()
    # a lenient margin below zero accepts the unchanged candidate: the rule, not chance, decided
    accepted = run_training(opts.replace(publish_margin=0.0, run_dir=tmp_path / "run2", lr=1e-3, epochs=2))
    assert accepted.decision_basis["rule"] == "cross_validated"
    assert accepted.published == (accepted.decision_basis["gain"]["mean_gain"] > 0.0)
    if accepted.published:
        published = load_model(opts.out, "segmentation").meta
        assert published["training"]["decision_basis"]["rule"] == "cross_validated"
        assert published["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.6}  # the filter it was judged with


def test_adaptation_needs_two_labelled_cases(tmp_path: Path) -> None:
    init = tmp_path / "served.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
                                                               "spacing": SPACING})  # fmt: skip
    with pytest.raises(InputError, match="at least 2 labelled cases"):
        run_training(_adapt_opts(make_datastore(tmp_path / "one", n=1), tmp_path, init))


class _FixedLogits(torch.nn.Module):
    """A network whose answer is fixed: a sure lesion where the truth has one, an unsure blob where it has none."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        logits = torch.full((1, 3, *shape), -6.0)
        logits[:, :, 4:10, 4:10, 4:10] = 6.0  # the true lesion, p 0.998 in every region
        logits[:, 0, 20:26, 20:26, 20:26] = 0.4  # a false whole-tumour blob, p 0.60
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1, -1)


def test_validation_scores_the_answer_as_served_with_the_filter() -> None:
    shape = (32, 32, 32)
    label = np.zeros(shape, dtype=np.uint8)
    label[4:10, 4:10, 4:10] = 3  # enhancing: in WT, TC and ET
    # signal everywhere: validation, like serving, zeroes probabilities where the image is empty
    store = CaseStore.in_memory([CaseSpec("c0", (), "test")],
                                [CacheEntry({"image": np.ones((4, *shape), np.float32), "label": label})])  # fmt: skip
    net = _FixedLogits(shape)
    ctx = StepContext(torch.device("cpu"), False, False, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    how = SegValidation(InfererSpec(), SMALL_NET, 1024.0)
    raw = validate_segmentation(net, store, ctx, how)
    served = validate_segmentation(net, store, ctx, SegValidation(InfererSpec(), SMALL_NET, 1024.0,
                                                                  ComponentFilter({"whole_tumor": 0.9})))  # fmt: skip
    assert raw.per_case["c0"]["wt"] == pytest.approx(2 * 216 / (216 + 432))  # the false blob halves WT Dice
    assert served.per_case["c0"]["wt"] == pytest.approx(1.0)  # as served, the filter removed it
    assert raw.per_case["c0"]["tc"] == served.per_case["c0"]["tc"] == pytest.approx(1.0)


def test_site_adaptation_scores_with_the_initial_models_filter(tmp_path: Path) -> None:
    init = tmp_path / "served.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
                                                               "spacing": SPACING})  # fmt: skip
    assert served_filter(init, adapt=True) is None  # no filter to carry: raw output, as served
    meta = json.loads(sidecar_path(init).read_text(encoding="utf-8"))
    meta["postprocess"] = {"min_mean_prob": {"whole_tumor": 0.9, "tumor_core": 0.8}}
    sidecar_path(init).write_text(json.dumps(meta), encoding="utf-8")
    filt = served_filter(init, adapt=True)
    assert filt is not None and filt.min_mean_prob == {"whole_tumor": 0.9, "tumor_core": 0.8}
    assert served_filter(init, adapt=False) is None  # a plain run refits its filter afterwards: raw output
    opts = _adapt_opts(Path("unused"), tmp_path, init)
    assert SegModel(opts, init).postprocess == filt
    assert SegModel(opts.replace(adapt=False), init).postprocess is None
