"""Classification training augmentation on preprocessed 2D (1, H, W) or 3D (4, x, y, z) tensors.

Left-right flips only (up-down or front-back flips would move e.g. the pituitary fossa to
where it never is), one resampling for a small rotation/scaling plus, in 2D, a random
crop (zoom into 85-100% of the field), SynthSeg-style domain randomisation (3D:
``apply_domain_randomisation``; 2D: ``apply_domain_randomisation_2d``, with JPEG-like
blocking), per-channel intensity scale/shift and Gaussian noise. In 3D the background is
exactly 0 after ``prepare_case`` and stays so. Every draw goes through ``transforms.rand``
with the caller's ``torch.Generator``, so a run is reproducible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .domain_random import DomainRandomSettings, apply_domain_randomisation, apply_domain_randomisation_2d
from .rand import chance, uniform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassAugment:
    """Probabilities and ranges of each augmentation."""

    flip_prob: float = 0.5
    affine_prob: float = 0.6
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    crop_prob: float = 0.5  # 2D only
    min_crop: float = 0.85
    domain_random: float = 1.0  # strength of the domain randomisation; 0 = off
    intensity_prob: float = 0.8
    max_intensity_scale: float = 0.15
    max_intensity_shift: float = 0.15
    noise_prob: float = 0.3
    noise_std: float = 0.1


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrix: 2x2 for one angle, 3x3 (x, then y, then z) for three."""
    if angles.numel() == 1:
        c, s = math.cos(float(angles[0])), math.sin(float(angles[0]))
        return torch.tensor([[c, -s], [s, c]])
    rot = torch.eye(3)
    for axis, a in enumerate(angles.tolist()):
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
        rot = r @ rot
    return rot


def _spatial(image: torch.Tensor, gen: torch.Generator, s: ClassAugment) -> torch.Tensor:
    """Rotation, scaling and (2D) random crop, composed into one resampling."""
    dims = image.ndim - 1
    matrix, shift = torch.eye(dims), torch.zeros(dims)
    if chance(gen, s.affine_prob):
        max_rad = math.radians(s.max_rotation_deg)
        matrix = _rotation(uniform(gen, -max_rad, max_rad, (1 if dims == 2 else 3,)))
        matrix = matrix * float(uniform(gen, 1 - s.max_scale, 1 + s.max_scale))
    if dims == 2 and chance(gen, s.crop_prob):
        frac = float(uniform(gen, s.min_crop, 1.0))
        matrix = matrix * frac
        shift = uniform(gen, -(1 - frac), 1 - frac, (2,))
    if torch.equal(matrix, torch.eye(dims)) and not bool(shift.any()):
        return image
    theta = torch.cat([matrix, shift[:, None]], dim=1)[None].to(image.dtype)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    # 3D: zeros outside keep the background exactly 0; 2D: the border value is the background
    padding = "zeros" if dims == 3 else "border"
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode=padding, align_corners=False)[0]


def _domain(image: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Domain randomisation of a 2D picture or a 3D case at ``strength`` (0 = unchanged, no draws)."""
    if strength <= 0:
        return image
    settings = DomainRandomSettings(strength=strength)
    if image.ndim == 3:
        return apply_domain_randomisation_2d(image, gen, settings)
    return apply_domain_randomisation(image, gen, settings)


def _intensity(image: torch.Tensor, gen: torch.Generator, s: ClassAugment) -> torch.Tensor:
    """Per-channel scale/shift and Gaussian noise; 3D background stays 0."""
    mask = (image != 0) if image.ndim == 4 else torch.ones_like(image, dtype=torch.bool)  # empty channels stay 0
    c = image.shape[0]
    view = (c,) + (1,) * (image.ndim - 1)
    if chance(gen, s.intensity_prob):
        scale = 1 + uniform(gen, -s.max_intensity_scale, s.max_intensity_scale, (c,)).view(view)
        shift = uniform(gen, -s.max_intensity_shift, s.max_intensity_shift, (c,)).view(view)
        image = torch.where(mask, image * scale + shift, image)
    if chance(gen, s.noise_prob):
        std = float(uniform(gen, 0.0, s.noise_std))
        image = torch.where(mask, image + std * torch.randn(image.shape, generator=gen), image)
    return image


def augment_sample(image: torch.Tensor, gen: torch.Generator, s: ClassAugment) -> torch.Tensor:
    """One augmented copy of a preprocessed image (C, *spatial), 2D or 3D."""
    x = image.float()
    if chance(gen, s.flip_prob):
        x = torch.flip(x, dims=[x.ndim - 1 if x.ndim == 3 else 1])  # 2D: image columns; 3D RAS: x (R-L)
    x = _spatial(x, gen, s)
    x = _domain(x, gen, s.domain_random)
    return _intensity(x, gen, s).contiguous()
