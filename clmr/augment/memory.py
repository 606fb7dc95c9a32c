"""Peak extra memory of one call, for the tests and benchmarks that check the chain's scratch bound.

On CUDA it is `torch.cuda.max_memory_allocated` above what was allocated before the call. On a Linux CPU
it is the rise of the process's resident high-water mark (VmHWM, reset before the call through
/proc/self/clear_refs) over the resident size before it; glibc is told to map every block of 64 KiB or
more on its own (`mallopt`) and the heap trimmed (`malloc_trim`), so that freed tensors leave the resident
set at once.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
_STATUS = Path("/proc/self/status")


def cpu_peak_supported() -> bool:
    """Whether CPU peaks can be measured here (Linux with glibc and a resettable VmHWM)."""
    return sys.platform.startswith("linux") and _STATUS.exists()


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{_STATUS} has no {key}")


def _map_large_blocks() -> None:
    """Large blocks mapped on their own from now on, and the heap's free memory handed back."""
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, 1 << 16) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 16)):
        raise RuntimeError("glibc mallopt refused the thresholds")
    libc.malloc_trim(0)


def peak_extra_bytes(fn: Callable[[], T], device: torch.device) -> tuple[int, T]:
    """(bytes the call allocated at its peak above what was in use before it, fn's result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    if device.type != "cpu" or not cpu_peak_supported():
        raise RuntimeError(f"no peak memory measure for {device} on {sys.platform}")
    _map_large_blocks()
    before = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    result = fn()
    return max(_status_bytes("VmHWM") - before, 0), result
