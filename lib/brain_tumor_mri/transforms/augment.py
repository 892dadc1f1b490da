"""Segmentation training augmentation of one patch, reproducible under a ``torch.Generator``.

Works on a patch cut by the patch sampler (``training.sampler``) from a preprocessed case
(image (C, x, y, z) z-scored with background 0, label (x, y, z) uint8): a small rotation
and scaling, flips, SynthSeg-style domain randomisation (``domain_random``: random contrast
curves, gamma, bias, thick slices, ghosting, noise), per-sequence intensity scale/shift, a
smooth multiplicative bias field, Gaussian noise and random sequence dropout, which teaches
the network to degrade gracefully when a sequence is missing (zero-filled at inference).
Intensity changes apply inside the brain only, so the background stays exactly 0 as at
inference. Every random draw goes through ``transforms.rand`` with the caller's generator.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .domain_random import DomainRandomSettings, apply_domain_randomisation
from .rand import chance, randint, uniform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges of each augmentation (defaults suit 1-2 mm brain MRI)."""

    flip_prob: float = 0.5  # per axis
    affine_prob: float = 0.3
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    domain_random: float = 1.0  # strength of the domain randomisation; 0 = off
    intensity_prob: float = 0.8
    max_intensity_scale: float = 0.15
    max_intensity_shift: float = 0.15
    bias_prob: float = 0.3
    bias_strength: float = 0.3
    noise_prob: float = 0.2
    noise_std: float = 0.1
    dropout_prob: float = 0.1  # zero one whole sequence


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """3x3 rotation matrix from three angles in radians (x, then y, then z)."""
    mats = []
    for axis, t in enumerate(angles.tolist()):
        c, s = math.cos(t), math.sin(t)
        i, j = [k for k in range(3) if k != axis]
        m = torch.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        mats.append(m)
    return mats[2] @ mats[1] @ mats[0]


def random_affine(
    image: torch.Tensor, label: torch.Tensor, gen: torch.Generator, max_deg: float, max_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/scale about the centre in voxel space: bilinear image, nearest label."""
    rot = _rotation(uniform(gen, -max_deg, max_deg, (3,)) * math.pi / 180)
    scale = torch.diag(1.0 / uniform(gen, 1 - max_scale, 1 + max_scale, (3,)))
    # affine_grid works in normalised coordinates ordered (z, y, x) for a (x, y, z) volume;
    # conjugating by the axis sizes keeps the rotation rigid on non-cubic patches.
    sizes = torch.tensor([float(n) for n in reversed(label.shape)])
    perm = torch.eye(3).flip(0)
    m = torch.diag(1 / sizes) @ perm @ (rot @ scale) @ perm @ torch.diag(sizes)
    theta = torch.cat([m, torch.zeros(3, 1)], dim=1)[None]
    grid = F.affine_grid(theta, [1, 1, *label.shape], align_corners=False)
    img = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img.to(image.dtype), lab[0, 0].round().to(label.dtype)


def bias_field(shape: tuple[int, ...], gen: torch.Generator, strength: float, nodes: int = 4) -> torch.Tensor:
    """A smooth positive multiplicative field: exp of an upsampled coarse random grid."""
    coarse = torch.randn((1, 1, nodes, nodes, nodes), generator=gen) * strength
    smooth = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)
    return torch.exp(smooth[0, 0])


def intensity_augment(image: torch.Tensor, gen: torch.Generator, s: AugmentSettings) -> torch.Tensor:
    """Per-sequence scale/shift, bias field and noise inside the brain; background stays 0."""
    brain = (image != 0).any(dim=0, keepdim=True).to(image.dtype)
    out = image
    c = image.shape[0]
    if chance(gen, s.intensity_prob):
        scale = uniform(gen, 1 - s.max_intensity_scale, 1 + s.max_intensity_scale, (c, 1, 1, 1))
        shift = uniform(gen, -s.max_intensity_shift, s.max_intensity_shift, (c, 1, 1, 1))
        out = out * scale + shift
    if chance(gen, s.bias_prob):
        out = out * bias_field(image.shape[1:], gen, s.bias_strength)
    if chance(gen, s.noise_prob):
        out = out + torch.randn(image.shape, generator=gen) * s.noise_std
    return out * brain


def sequence_dropout(image: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """With probability ``p`` zero one whole (non-empty) sequence, keeping at least one."""
    if not chance(gen, p):
        return image
    present = [c for c in range(image.shape[0]) if bool(image[c].any())]
    if len(present) < 2:
        return image
    out = image.clone()
    out[present[randint(gen, len(present))]] = 0
    return out


def flip(image: torch.Tensor, label: torch.Tensor, axes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip image (C, x, y, z) and label (x, y, z) along spatial ``axes`` (0..2)."""
    if not axes:
        return image, label
    return torch.flip(image, [a + 1 for a in axes]), torch.flip(label, axes)


def domain_randomise(image: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """SynthSeg-style domain randomisation at ``strength`` (0 = unchanged, no draws)."""
    if strength <= 0:
        return image
    return apply_domain_randomisation(image, gen, DomainRandomSettings(strength=strength))


def augment(
    image: torch.Tensor, label: torch.Tensor, gen: torch.Generator, s: AugmentSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented copy of a patch: image (C, *patch) float32, label (*patch) uint8."""
    s = s or AugmentSettings()
    image = image.float()
    if chance(gen, s.affine_prob):
        image, label = random_affine(image, label, gen, s.max_rotation_deg, s.max_scale)
    image, label = flip(image, label, [a for a in range(3) if chance(gen, s.flip_prob)])
    image = domain_randomise(image, gen, s.domain_random)
    image = intensity_augment(image, gen, s)
    image = sequence_dropout(image, gen, s.dropout_prob)
    return image.contiguous(), label.contiguous()
