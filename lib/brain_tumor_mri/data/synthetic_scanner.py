"""Scanner profiles and acquisition effects applied to each generated sequence.

A profile is a site: its field strength shows as noise and bias levels, its protocol as
slice thickness and orientation, its hardware as ghosting and the stored bit depth. Each
sequence of a case draws an :class:`Acquisition` from its case's profile and is degraded
in this order: in-plane blur; thick slices along one axis (slice profile blur, keep every
k-th slice, linear interpolation back to the output grid); Nyquist ghosting or k-space
motion along the phase-encoding axis; smooth multiplicative bias; gamma; Rician noise;
arbitrary global scale and offset, rounded to the profile's bit depth. The background
(outside the skull-stripped brain) stays exactly 0.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .synthetic_fields import smooth_noise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """Ranges a site draws its acquisitions from (see module docstring)."""

    slice_mm: tuple[float, float]  # acquired slice thickness range (1 = isotropic)
    slice_axis_p: tuple[float, float, float]  # probability of sagittal, coronal, axial slices
    noise: tuple[float, float]  # Rician noise sd as a fraction of white matter
    bias: tuple[float, float]  # std of the log bias field
    ghost_p: float  # chance of ghosting or motion per sequence
    gamma_sd: float  # std of log(gamma)
    max_value: tuple[int, ...]  # stored ranges to pick from (bit depth)


PROFILES: dict[str, Profile] = {
    "random": Profile((1.0, 6.0), (0.15, 0.15, 0.7), (0.005, 0.07), (0.0, 0.35), 0.2, 0.25, (255, 4095, 32000)),
    "site_a": Profile((1.0, 3.0), (0.0, 0.0, 1.0), (0.008, 0.02), (0.05, 0.15), 0.05, 0.08, (4095,)),
    "site_b": Profile((4.0, 5.5), (0.0, 0.1, 0.9), (0.02, 0.04), (0.1, 0.25), 0.12, 0.1, (32000,)),
    "site_c": Profile((4.5, 6.0), (0.3, 0.6, 0.1), (0.03, 0.06), (0.15, 0.35), 0.3, 0.15, (255,)),
    "site_d": Profile((1.0, 1.5), (0.3, 0.3, 0.4), (0.01, 0.03), (0.25, 0.45), 0.1, 0.1, (4095, 32000)),
}
#: Extra strength of every effect in the ``wild`` domain.
_WILD = {"noise": 1.5, "bias": 1.4, "gamma_sd": 2.0}


@dataclass(frozen=True)
class Acquisition:
    """What one sequence's simulated acquisition did (recorded in the case metadata)."""

    blur_mm: float
    slice_mm: float
    slice_axis: int
    ghost: float  # amplitude of the N/2 ghost (0 = none)
    motion: float  # fraction of k-space lines with random phase (0 = none)
    bias: float
    gamma: float
    noise: float
    max_value: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly form."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def check_profile(name: str) -> str:
    """``name`` if it is a known profile, else a ValueError listing them."""
    if name not in PROFILES:
        raise ValueError(f"unknown scanner profile {name!r}; expected one of {', '.join(PROFILES)}")
    return name


def draw_acquisition(rng: np.random.Generator, profile: str, wild: bool) -> Acquisition:
    """One sequence's acquisition parameters from ``profile`` (stronger effects if ``wild``)."""
    p = PROFILES[check_profile(profile)]
    k = _WILD if wild else {"noise": 1.0, "bias": 1.0, "gamma_sd": 1.0}
    artefact = rng.random() < p.ghost_p
    ghost = float(rng.uniform(0.03, 0.12)) if artefact and rng.random() < 0.6 else 0.0
    motion = float(rng.uniform(0.02, 0.1)) if artefact and ghost == 0.0 else 0.0
    return Acquisition(
        blur_mm=float(rng.uniform(0.3, 1.0)),
        slice_mm=float(rng.uniform(*p.slice_mm)),
        slice_axis=int(rng.choice(3, p=p.slice_axis_p)),
        ghost=ghost,
        motion=motion,
        bias=float(rng.uniform(*p.bias)) * k["bias"],
        gamma=float(np.exp(rng.normal(0.0, p.gamma_sd * k["gamma_sd"]))),
        noise=float(rng.uniform(*p.noise)) * k["noise"],
        max_value=int(rng.choice(p.max_value)),
    )


def acquire(
    rng: np.random.Generator,
    img: np.ndarray,
    fg: np.ndarray,
    axes: tuple[np.ndarray, ...],
    spacing: float,
    acq: Acquisition,
    ref: float,
) -> np.ndarray:
    """Apply ``acq`` to a noise-free image (``ref`` = its white-matter level); 0 outside ``fg``."""
    sigma = acq.blur_mm / spacing
    if sigma >= 0.25:
        img = ndimage.gaussian_filter(img, sigma, truncate=3.0)
    img = thick_slices(img, acq.slice_axis, acq.slice_mm / spacing, rng)
    phase_axis = (acq.slice_axis + 1 + int(rng.integers(2))) % 3
    if acq.ghost > 0:
        img = img + np.float32(acq.ghost) * np.roll(img, img.shape[phase_axis] // 2, axis=phase_axis)
    if acq.motion > 0:
        img = kspace_motion(img, phase_axis, acq.motion, rng)
    if acq.bias > 0:
        img = img * np.exp(np.float32(acq.bias) * smooth_noise(rng, axes, float(rng.uniform(60.0, 110.0))))
    values = np.maximum(img[fg], 0.0)
    top = float(np.percentile(values, 99.5)) + 1e-6 if values.size else 1.0
    values = top * (values / top) ** np.float32(acq.gamma)
    n1, n2 = rng.standard_normal((2, values.size), dtype=np.float32) * np.float32(acq.noise * ref)
    values = np.sqrt((values + n1) ** 2 + n2**2)
    return _store(rng, values, fg, acq.max_value)


def _store(rng: np.random.Generator, values: np.ndarray, fg: np.ndarray, max_value: int) -> np.ndarray:
    """Arbitrary global scale and offset, rounded into ``1..max_value`` (the stored bit depth)."""
    out = np.zeros(fg.shape, dtype=np.float32)
    if not values.size:
        return out
    top = float(np.percentile(values, 99.9)) + 1e-6
    target = float(rng.uniform(0.3, 0.95)) * max_value
    offset = float(rng.uniform(0.0, 0.05)) * max_value if rng.random() < 0.3 else 0.0
    scaled = values * np.float32((target - offset) / top) + np.float32(offset)
    out[fg] = np.clip(np.rint(scaled), 1, max_value)
    return out


def thick_slices(img: np.ndarray, axis: int, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Simulate slices ``factor`` voxels thick along ``axis`` and resample back to the grid."""
    if factor < 1.5:
        return img
    img = ndimage.gaussian_filter1d(img, factor / 2.355, axis=axis, truncate=2.5)
    n = img.shape[axis]
    step = float(factor)
    kept = np.arange(float(rng.uniform(0.0, step)), n, step)
    if kept.size < 2:
        return img
    lo = np.clip(np.floor(kept).astype(int), 0, n - 1)
    sampled = np.take(img, lo, axis=axis)  # nearest acquired positions
    pos = np.clip((np.arange(n) - kept[0]) / step, 0.0, kept.size - 1.0)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, kept.size - 1)
    frac = (pos - i0).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(img.ndim)])
    return np.take(sampled, i0, axis=axis) * (1.0 - frac) + np.take(sampled, i1, axis=axis) * frac


def kspace_motion(img: np.ndarray, axis: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rigid-motion-like ghosts: random phase ramps on a fraction of k-space lines along ``axis``."""
    n = img.shape[axis]
    k = np.fft.fft(img, axis=axis)
    lines = rng.random(n) < fraction
    lines[0] = False  # keep the DC line so the mean intensity survives
    shift = rng.uniform(-3.0, 3.0, n) * lines  # voxels of displacement during those lines
    freq = np.fft.fftfreq(n)
    phase = np.exp(-2j * np.pi * freq * shift).astype(np.complex64)
    k *= phase.reshape([-1 if a == axis else 1 for a in range(img.ndim)])
    return np.abs(np.fft.ifft(k, axis=axis)).astype(np.float32)
