"""Device and precision choices, detected once at run time.

On CPUs with native bf16 (AMX-BF16 / AVX512-BF16), channels-last-3d plus bf16 autocast
cuts 3D U-Net forward time about 2x; elsewhere fp32 is kept. On a GPU, fp16 autocast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Iterator, TypeVar

import torch

logger = logging.getLogger(__name__)

M = TypeVar("M", torch.Tensor, torch.nn.Module)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo advertises AMX-BF16 or AVX512-BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def pick_device(choice: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def use_reduced_precision(device: torch.device, bf16: str = "auto") -> bool:
    """Whether to autocast: always on GPU, on CPU per ``bf16`` (auto = native support)."""
    if device.type == "cuda":
        return True
    if bf16 == "on":
        return True
    if bf16 == "off":
        return False
    return cpu_has_native_bf16()


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CPU, fp16 on CUDA, or nothing."""
    if not enabled:
        yield
        return
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def to_memory_format(x: M, enabled: bool) -> M:
    """channels-last-3d for 5D tensors / modules when reduced precision is used on CPU."""
    if not enabled:
        return x
    return x.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # Module.to takes it
