"""Domain randomisation of preprocessed training images (SynthSeg-style), in pure torch.

Entry points (the augmentation pipelines call exactly these two):

``apply_domain_randomisation(image, gen, settings=DomainRandomSettings()) -> Tensor``
    ``image``: float tensor (C, x, y, z), already preprocessed (``transforms.preprocess``):
    each channel z-scored over the brain, background exactly 0 in every channel. Returns a
    new tensor of the same shape and dtype: background (voxels that are 0 in all channels)
    still exactly 0, every non-empty channel with the foreground mean and std it had (so a
    whole case stays z-scored and a training patch stays in the whole-brain frame inference
    sees; an all-zero channel, e.g. a dropped sequence, stays all zero), no NaN/Inf.

``apply_domain_randomisation_2d(image, gen, settings=DomainRandomSettings()) -> Tensor``
    ``image``: float tensor (1, H, W) as ``classify_preprocess.prepare_image`` makes it
    (z-scored, clamped to [-5, 5]; the background is its minimum). Returns the same shape:
    pixels at the input's minimum keep that value, the foreground keeps its mean and std,
    values stay within [-5, 5].

Why: a model that learned one scanner's contrast fails on another's. Each channel gets a
random intensity remapping (a random piecewise-linear curve, usually monotonic, sometimes
not, so the network cannot rely on exact intensity ordering), gamma, a smooth bias field,
thick-slice resolution loss along a random axis, ghosting or k-space motion and noise of a
random level; 2D pictures also get JPEG-like 8x8 blockiness and 8-bit quantisation. Every
random draw comes from the caller's ``torch.Generator``, so a seed reproduces the output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .rand import chance, uniform

logger = logging.getLogger(__name__)

__all__ = ["DomainRandomSettings", "apply_domain_randomisation", "apply_domain_randomisation_2d"]


@dataclass(frozen=True)
class DomainRandomSettings:
    """Probabilities and ranges of each effect; ``strength`` scales every amplitude (0 = off)."""

    strength: float = 1.0
    remap_prob: float = 0.8  # random intensity curve per channel
    remap_knots: int = 6
    non_monotonic_prob: float = 0.1  # the curve may fold (contrast inversions)
    gamma_prob: float = 0.5
    gamma_log_sd: float = 0.3
    bias_prob: float = 0.5
    bias_strength: float = 0.35  # std of the log field at strength 1
    lowres_prob: float = 0.3
    max_slice_factor: float = 5.0  # thickest simulated slice, in voxels
    ghost_prob: float = 0.1
    ghost_amplitude: float = 0.12
    motion_prob: float = 0.1
    noise_prob: float = 0.5
    noise_sd: float = 0.12  # largest noise std, in units of the foreground std
    jpeg_prob: float = 0.3  # 2D only
    jpeg_block_mix: float = 0.35  # 2D only: largest blend towards 8x8 block means


def _u(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    """One uniform draw in [lo, hi) (the shared ``rand.uniform``)."""
    return float(uniform(gen, lo, hi))


def _to_unit(x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Foreground values mapped to [0, 1] by their robust range; returns (mapped, lo, hi).

    The 0.5 / 99.5 % quantiles come from an evenly strided subsample of at most 20,000
    values, one sort for both: a full-patch quantile cost ~60 ms per channel for no gain.
    """
    sample = x if x.numel() <= 20_000 else x[:: max(1, x.numel() // 20_000)]
    lo_hi = torch.quantile(sample, torch.tensor([0.005, 0.995], dtype=sample.dtype))
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if hi - lo < 1e-6:
        hi = lo + 1.0
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0), lo, hi


def _remap(v: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings) -> torch.Tensor:
    """Random piecewise-linear curve on [0, 1] (monotonic unless a fold is drawn)."""
    k = max(2, s.remap_knots)
    knots = torch.rand(k, generator=gen)
    if not chance(gen, s.non_monotonic_prob):
        knots = torch.sort(knots).values
        knots = (knots - knots[0]) / (knots[-1] - knots[0] + 1e-6)
    identity = torch.linspace(0.0, 1.0, k)
    curve = identity + min(s.strength, 1.0) * (knots - identity)
    pos = v * (k - 1)
    i0 = pos.floor().clamp(0, k - 2).long()
    frac = pos - i0
    return curve[i0] * (1 - frac) + curve[i0 + 1] * frac


def _smooth_field(gen: torch.Generator, shape: tuple[int, ...], coarse: int = 4) -> torch.Tensor:
    """Zero-mean, unit-ish smooth random field of ``shape`` (2D or 3D) from a coarse grid."""
    small = torch.randn((1, 1) + (coarse,) * len(shape), generator=gen)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(small, size=shape, mode=mode, align_corners=True)[0, 0]


def _lowres(x: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings) -> torch.Tensor:
    """Down-sample one spatial axis by a random factor and back (thick slices); x is (C, *spatial)."""
    nd = x.dim() - 1
    axis = int(torch.randint(nd, (), generator=gen))
    factor = _u(gen, 1.5, max(1.5, 1.0 + (s.max_slice_factor - 1.0) * min(s.strength, 1.0)))
    size = list(x.shape[1:])
    small = list(size)
    small[axis] = max(2, int(round(size[axis] / factor)))
    mode = "trilinear" if nd == 3 else "bilinear"
    down = F.interpolate(x[None], size=small, mode=mode, align_corners=False, antialias=False)
    return F.interpolate(down, size=size, mode=mode, align_corners=False)[0]


def _ghost_or_motion(x: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings, ghost: bool) -> torch.Tensor:
    """Nyquist N/2 ghost, or random phase ramps on a few k-space lines, along a random axis."""
    nd = x.dim() - 1
    axis = 1 + int(torch.randint(nd, (), generator=gen))
    n = x.shape[axis]
    if ghost:
        amp = _u(gen, 0.02, s.ghost_amplitude) * s.strength
        return x + amp * torch.roll(x, n // 2, dims=axis)
    lines = torch.rand(n, generator=gen) < 0.06 * max(s.strength, 0.1)
    lines[0] = False
    shift = (torch.rand(n, generator=gen) * 6.0 - 3.0) * lines
    phase = torch.exp(-2j * math.pi * torch.fft.fftfreq(n) * shift)
    view = [1] * x.dim()
    view[axis] = n
    return torch.fft.ifft(torch.fft.fft(x, dim=axis) * phase.reshape(view), dim=axis).abs().to(x.dtype)


def _channel(v: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings) -> torch.Tensor:
    """Remap and gamma for the foreground values of one channel, in unit range."""
    if chance(gen, s.remap_prob):
        v = _remap(v, gen, s)
    if chance(gen, s.gamma_prob):
        gamma = math.exp(float(torch.randn((), generator=gen)) * s.gamma_log_sd * s.strength)
        v = v.clamp_min(0.0) ** gamma
    return v


def _spatial(x: torch.Tensor, fg: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings) -> torch.Tensor:
    """Bias, resolution loss, ghosting/motion and noise on (C, *spatial) unit-range channels."""
    if chance(gen, s.bias_prob):
        x = x * torch.exp(s.bias_strength * s.strength * _smooth_field(gen, tuple(x.shape[1:])))
    if chance(gen, s.lowres_prob):
        x = _lowres(x, gen, s)
    ghost, motion = chance(gen, s.ghost_prob), chance(gen, s.motion_prob)
    if ghost or motion:
        x = _ghost_or_motion(x, gen, s, ghost)
    if chance(gen, s.noise_prob):
        sd = _u(gen, 0.0, s.noise_sd) * s.strength * 0.25  # unit range is about 4 foreground stds
        x = x + sd * torch.randn(x.shape, generator=gen)
    return torch.where(fg, x, torch.zeros((), dtype=x.dtype))


def _standardise(x: torch.Tensor, fg: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Shift and scale ``x`` so its foreground has ``mean`` and ``std``."""
    vals = x[fg]
    if vals.numel() < 2 or float(vals.std()) < 1e-6:
        return torch.where(fg, torch.full_like(x, mean), x)
    return (x - vals.mean()) / vals.std() * std + mean


def _moments(values: torch.Tensor) -> tuple[float, float]:
    """Mean and std of a channel's foreground (std 1 when it is flat: nothing to preserve)."""
    if values.numel() < 2 or float(values.std()) < 1e-6:
        return float(values.mean()) if values.numel() else 0.0, 1.0
    return float(values.mean()), float(values.std())


def apply_domain_randomisation(
    image: torch.Tensor, gen: torch.Generator, settings: DomainRandomSettings | None = None
) -> torch.Tensor:
    """Domain-randomised copy of a preprocessed (C, x, y, z) image; contract in the module docstring."""
    s = settings or DomainRandomSettings()
    if image.dim() != 4:
        raise ValueError(f"expected a (C, x, y, z) image, got shape {tuple(image.shape)}")
    x = image.detach().to(torch.float32).clone()
    brain = (x != 0).any(dim=0)
    if not bool(brain.any()) or s.strength <= 0:
        return image.clone()
    live = [c for c in range(x.shape[0]) if bool((x[c] != 0).any())]
    # Each channel keeps the foreground mean and std it came with: on a whole case that is the
    # z-score frame (0, 1); on a training patch it is the patch's share of the whole-brain frame,
    # which inference sees, so a patch is never re-normalised on its own statistics.
    frame = {c: _moments(x[c][brain]) for c in live}
    for c in live:
        unit, _, _ = _to_unit(x[c][brain])
        x[c][brain] = _channel(unit, gen, s) + 0.05  # keep the brain off zero before the spatial effects
    x = _spatial(x, brain.expand_as(x), gen, s)
    out = torch.zeros_like(x)
    for c in live:
        out[c] = torch.where(brain, _standardise(x[c], brain, *frame[c]), torch.zeros((), dtype=x.dtype))
    return torch.nan_to_num(out).to(image.dtype)


def apply_domain_randomisation_2d(
    image: torch.Tensor, gen: torch.Generator, settings: DomainRandomSettings | None = None
) -> torch.Tensor:
    """Domain-randomised copy of a preprocessed (1, H, W) picture; contract in the module docstring."""
    s = settings or DomainRandomSettings()
    if image.dim() != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    x = image.detach().to(torch.float32).clone()
    low = float(x.min())
    fg = x > low
    if int(fg.sum()) < 2 or s.strength <= 0:
        return image.clone()
    mean, std = float(x[fg].mean()), float(x[fg].std())
    unit, _, _ = _to_unit(x[fg])
    x = torch.zeros_like(x)
    x[fg] = _channel(unit, gen, s) + 0.05
    x = _spatial(x, fg, gen, s)
    if chance(gen, s.jpeg_prob):
        x = _jpeg_like(x, gen, s)
    x = torch.where(fg, _standardise(x, fg, mean, std), torch.full_like(x, low))
    return torch.nan_to_num(x).clamp(-5.0, 5.0).to(image.dtype)


def _jpeg_like(x: torch.Tensor, gen: torch.Generator, s: DomainRandomSettings) -> torch.Tensor:
    """Cheap JPEG look: blend towards 8x8 block means, then quantise to 8 bits."""
    h, w = x.shape[-2:]
    blocks = F.avg_pool2d(x[None], 8, ceil_mode=True)
    up = F.interpolate(blocks, scale_factor=8, mode="nearest")[0, :, :h, :w]
    mix = _u(gen, 0.0, s.jpeg_block_mix) * min(s.strength, 1.0)
    x = (1 - mix) * x + mix * up
    top = float(x.max()) + 1e-6
    return torch.round(x / top * 255.0) / 255.0 * top
