"""Domain randomisation of preprocessed tensors: contract (background, shape, stats), determinism, variety."""

from __future__ import annotations

import torch

from brain_tumor_mri.transforms.domain_random import (
    DomainRandomSettings,
    apply_domain_randomisation,
    apply_domain_randomisation_2d,
)

ALWAYS = DomainRandomSettings(
    remap_prob=1.0, gamma_prob=1.0, bias_prob=1.0, lowres_prob=1.0, ghost_prob=0.5, motion_prob=0.5, noise_prob=1.0,
    jpeg_prob=1.0,
)  # fmt: skip


def _image_3d() -> torch.Tensor:
    """A (4, 24, 28, 20) z-scored 'brain' (ellipsoid) with exactly-0 background and one empty channel."""
    g = torch.Generator().manual_seed(0)
    x, y, z = torch.meshgrid(
        torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 20), indexing="ij"
    )
    brain = x**2 + y**2 + z**2 < 0.8
    img = torch.randn((4, 24, 28, 20), generator=g) + torch.stack([x, y, z, x * y]) * 3
    img[3] = 0.0  # a dropped sequence
    img = torch.where(brain, img, torch.zeros(()))
    for c in range(3):
        v = img[c][brain]
        img[c] = torch.where(brain, (img[c] - v.mean()) / v.std(), torch.zeros(()))
    return img


def _image_2d() -> torch.Tensor:
    """A (1, 64, 64) z-scored picture whose background is its minimum."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    head = xx**2 + yy**2 < 0.7
    img = torch.where(head, 1.0 + xx + 0.3 * torch.randn((64, 64), generator=g), torch.zeros(()))
    fg = img > 0
    return ((img - img[fg].mean()) / img[fg].std())[None].clamp(-5, 5)


def test_3d_keeps_background_shape_and_standardisation():
    img = _image_3d()
    brain = (img != 0).any(dim=0)
    for seed in range(6):
        out = apply_domain_randomisation(img, torch.Generator().manual_seed(seed), ALWAYS)
        assert out.shape == img.shape and out.dtype == img.dtype and torch.isfinite(out).all()
        assert not out[:, ~brain].any(), "background must stay exactly 0"
        assert not out[3].any(), "an empty (dropped) channel stays empty"
        for c in range(3):
            vals = out[c][brain]
            assert abs(float(vals.mean())) < 1e-3 and abs(float(vals.std()) - 1.0) < 1e-3


def test_3d_patch_keeps_its_share_of_the_whole_brain_frame():
    # A training patch of a z-scored case (e.g. one centred on a bright tumour) has its own
    # foreground moments; re-z-scoring it to (0, 1) would shift it away from what inference sees.
    img = _image_3d()
    patch = img.clone()
    brain = (patch != 0).any(dim=0)
    patch[:3] = torch.where(brain, patch[:3] * 0.6 + 1.5, torch.zeros(()))
    for seed in range(4):
        out = apply_domain_randomisation(patch, torch.Generator().manual_seed(seed), ALWAYS)
        for c in range(3):
            before, after = patch[c][brain], out[c][brain]
            assert abs(float(after.mean()) - float(before.mean())) < 1e-3
            assert abs(float(after.std()) - float(before.std())) < 1e-3
        assert (out[:3] - patch[:3]).abs().mean() > 0.05, "the patch is still randomised"


def test_3d_is_deterministic_per_seed_and_varies_across_seeds():
    img = _image_3d()
    a = apply_domain_randomisation(img, torch.Generator().manual_seed(7), ALWAYS)
    b = apply_domain_randomisation(img, torch.Generator().manual_seed(7), ALWAYS)
    c = apply_domain_randomisation(img, torch.Generator().manual_seed(8), ALWAYS)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.05
    assert (a - img).abs().mean() > 0.05, "the default-on effects change the image"


def test_3d_strength_zero_is_identity():
    img = _image_3d()
    out = apply_domain_randomisation(img, torch.Generator().manual_seed(1), DomainRandomSettings(strength=0.0))
    assert torch.equal(out, img)


def test_2d_keeps_background_range_and_foreground_stats():
    img = _image_2d()
    low = float(img.min())
    fg = img > low
    outs = [apply_domain_randomisation_2d(img, torch.Generator().manual_seed(s), ALWAYS) for s in range(5)]
    for out in outs:
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert torch.all(out[~fg] == low), "background keeps its value"
        assert float(out.min()) >= -5.0 and float(out.max()) <= 5.0
        assert abs(float(out[fg].mean()) - float(img[fg].mean())) < 0.1
    assert (outs[0] - outs[1]).abs().mean() > 0.02
    again = apply_domain_randomisation_2d(img, torch.Generator().manual_seed(0), ALWAYS)
    assert torch.equal(again, outs[0])


def test_default_settings_run_without_nan():
    img, pic = _image_3d(), _image_2d()
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        assert torch.isfinite(apply_domain_randomisation(img, g)).all()
        assert torch.isfinite(apply_domain_randomisation_2d(pic, g)).all()
