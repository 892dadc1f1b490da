"""Training augmentation: image and label stay aligned, seeded, domain randomisation on by default."""

from __future__ import annotations

import torch

from brain_tumor_mri.transforms import rand
from brain_tumor_mri.transforms.augment import AugmentSettings, augment, flip
from brain_tumor_mri.transforms.augment_class import ClassAugment, augment_sample
from tests.helpers.segmentation import synthetic_case

OFF = dict(affine_prob=0.0, flip_prob=0.0, domain_random=0.0, intensity_prob=0.0, bias_prob=0.0, noise_prob=0.0,
           dropout_prob=0.0)  # fmt: skip


def _patch() -> tuple[torch.Tensor, torch.Tensor]:
    stack, label = synthetic_case(1)
    image = torch.from_numpy(stack)
    brain = image.abs().sum(0) > 0
    image = torch.where(brain, (image - image[:, brain].mean(1)[:, None, None, None]) / 10, torch.zeros(()))
    return image.float(), torch.from_numpy(label)


def test_label_travels_with_the_image() -> None:
    image, label = _patch()
    settings = AugmentSettings(**{**OFF, "affine_prob": 1.0, "flip_prob": 0.5})
    img, lab = augment(image, label, torch.Generator().manual_seed(3), settings)
    assert img.shape == image.shape and lab.shape == label.shape and lab.dtype == torch.uint8
    t1c = img[1]
    assert float(t1c[lab == 3].mean()) > float(t1c[lab == 2].mean()) + 0.5  # enhancing stays bright in T1c
    flipped_img, flipped_lab = flip(image, label, [0, 2])
    assert torch.equal(flipped_img, torch.flip(image, [1, 3])) and torch.equal(flipped_lab, torch.flip(label, [0, 2]))


def test_seeded_and_domain_randomised_by_default() -> None:
    image, label = _patch()
    a = augment(image, label, torch.Generator().manual_seed(7))
    b = augment(image, label, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert AugmentSettings().domain_random > 0 and ClassAugment().domain_random > 0
    # with everything else off, the default strength still changes the contrast, the background stays 0
    plain = augment(image, label, torch.Generator().manual_seed(1), AugmentSettings(**OFF))[0]
    randomised = augment(
        image, label, torch.Generator().manual_seed(1), AugmentSettings(**{**OFF, "domain_random": 1.0})
    )[0]
    assert torch.equal(plain, image) and not torch.allclose(randomised, image, atol=0.05)
    assert not randomised[:, image.abs().sum(0) == 0].any()


def test_classification_augment_keeps_shape_background_and_seed() -> None:
    x = torch.randn(1, 32, 32)
    a = augment_sample(x, torch.Generator().manual_seed(0), ClassAugment())
    assert a.shape == x.shape and torch.equal(a, augment_sample(x, torch.Generator().manual_seed(0), ClassAugment()))
    vol = torch.zeros(4, 16, 16, 16)
    vol[:3, 4:12, 4:12, 4:12] = torch.randn(3, 8, 8, 8)
    out = augment_sample(vol, torch.Generator().manual_seed(1), ClassAugment())
    assert out.shape == vol.shape and float(out[:, 0, 0, 0].abs().sum()) == 0.0
    assert not out[3].any()  # an empty (missing) sequence stays empty


def test_shared_random_helpers_always_draw_once() -> None:
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    rand.chance(g1, 0.0)
    rand.chance(g2, 1.0)
    assert float(rand.uniform(g1, 0, 1)) == float(rand.uniform(g2, 0, 1))  # the stream does not depend on p
    assert 0 <= rand.randint(g1, 3) < 3
