"""Which torch device a command may run on: one check, used by every command that takes --device."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clmr.errors import ClmrError

if TYPE_CHECKING:
    import torch


class DeviceError(ClmrError):
    """A device name torch does not know, or a device this machine does not have."""


def usable_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device when this machine can run on it (cpu, cuda, cuda:N, mps), else a
    DeviceError naming it and what is available."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"device {device!r}: unknown device name; use cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device!r}: no CUDA device is available here; use cpu")
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"device {device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r}: only cpu, cuda and mps devices are supported")
    return dev
