"""Patch sampling (foreground oversampling, padding) and the epoch plan (seeds, shards, balance, replay)."""

from __future__ import annotations

import numpy as np
import torch

from brain_tumor_mri.training.sampler import EpochPlan, crop, foreground_coords, sample_patch


def _case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A 64^3 case whose tumour (label 2 and a small label 3) fills well under 1 % of it."""
    label = torch.zeros((64, 64, 64), dtype=torch.uint8)
    label[50:54, 50:54, 50:54] = 2
    label[51:53, 51:53, 51:53] = 3
    image = label[None].float().repeat(4, 1, 1, 1)  # an image channel equal to the label
    return image, label, foreground_coords(label.numpy(), 0)


def test_foreground_fraction_of_patches() -> None:
    image, label, fg = _case()
    assert set(np.unique(fg[:, 0])) == {2, 3}
    gen = torch.Generator().manual_seed(0)
    n = 400
    centred, with_tumour = 0, 0
    for _ in range(n):
        img, lab, on_fg = sample_patch(image, label, fg, (16, 16, 16), 0.33, gen)
        assert torch.equal(img[0], lab.float())  # image and label cut from the same window
        centred += on_fg
        with_tumour += bool(lab.any())
    # binomial(400, 0.33): mean 132, sd 9.4 -- a fixed seed, bounds at about 3 sd
    assert 104 <= centred <= 160
    # a centred patch always contains tumour; a random 16^3 window of 64^3 rarely reaches the 4^3 corner
    assert centred <= with_tumour < centred + 0.1 * n
    never = sum(bool(sample_patch(image, label, fg, (16, 16, 16), 0.0, gen)[1].any()) for _ in range(100))
    always = sum(bool(sample_patch(image, label, fg, (16, 16, 16), 1.0, gen)[1].any()) for _ in range(100))
    assert always == 100 and never < 15


def test_small_volume_is_padded_and_crop_fills_zeros() -> None:
    image, label = torch.ones((4, 10, 20, 30)), torch.ones((10, 20, 30), dtype=torch.uint8)
    img, lab, _ = sample_patch(image, label, np.zeros((0, 4), np.int16), (16, 16, 16), 0.5, torch.Generator())
    assert img.shape == (4, 16, 16, 16) and lab.shape == (16, 16, 16)
    assert int(lab.sum()) == 10 * 16 * 16  # x is padded (10 of 16), y and z are cut
    window = crop(torch.arange(27.0).reshape(3, 3, 3), (-1, 0, 1), (3, 3, 3))
    assert window[0].abs().sum() == 0 and window[1, 0, 0] == 1.0 and window[1, 0, 2] == 0.0


def test_epoch_plan_is_seeded_sharded_and_balanced() -> None:
    plan = EpochPlan(5, seed=3)
    assert plan.items(1, 10) == plan.items(1, 10) and plan.items(1, 10) != plan.items(2, 10)
    full = plan.items(1, 11, 0, 1)
    shards = [plan.items(1, 11, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to a multiple of the world size
    assert sorted(sum(shards, [])) == sorted(plan.items(1, 12))
    assert sorted(i for i, _ in full[:10]) == sorted(list(range(5)) * 2)  # shuffled passes over all cases
    balanced = EpochPlan(4, targets=(0, 0, 0, 1), seed=1).items(1, 2000)
    share_rare = sum(1 for i, _ in balanced if i == 3) / len(balanced)
    assert 0.45 < share_rare < 0.55  # the single case of class 1 is drawn as often as the three of class 0


def test_replay_is_mixed_at_its_fraction() -> None:
    items = EpochPlan(10, n_replay=4, replay_fraction=0.25, seed=0).items(1, 4000)
    replay = [i for i, _ in items if i >= 10]
    assert 0.22 < len(replay) / len(items) < 0.28 and set(replay) == {10, 11, 12, 13}
    assert all(i < 10 for i, _ in EpochPlan(10, n_replay=4, replay_fraction=0.0).items(1, 200))
