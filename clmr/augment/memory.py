"""Peak extra memory of one call, for the tests and benchmarks that check the chain's scratch bound.

On CUDA it is `torch.cuda.max_memory_allocated` above what was allocated before the call. On a Linux CPU
it is the rise of the process's resident high-water mark (VmHWM, reset before the call through
/proc/self/clear_refs) over the resident size before it, with glibc told to map every block of 64 KiB or
more on its own (`map_large_blocks`, first thing in the process), so that freed tensors leave the resident
set at once and none is reused unseen.
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
    if not sys.platform.startswith("linux") or not _STATUS.exists():
        return False
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:  # musl and other C libraries
        return False


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{_STATUS} has no {key}")


def map_large_blocks() -> None:
    """From now on glibc maps every block of 64 KiB or more on its own and unmaps it when freed. Call it
    before the process allocates large tensors: blocks freed into the heap before it would be reused
    unseen by the resident high-water mark."""
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, 1 << 16) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 16)):
        raise RuntimeError("glibc mallopt refused the thresholds")


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
    map_large_blocks()
    before = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    result = fn()
    return max(_status_bytes("VmHWM") - before, 0), result
