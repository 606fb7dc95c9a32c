"""Which torch device to run on: the one resolver behind every command and function that takes a device
(`auto` picks the best this machine has; an explicit name is checked against what it has)."""

from __future__ import annotations

import torch

from clmr.errors import ClmrError

DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ClmrError):
    """A device name torch does not know, or a device this machine does not have."""


def auto_device() -> torch.device:
    """CUDA when available, else MPS (Apple GPUs) when available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(
    device: str | torch.device | None = "auto", model: torch.nn.Module | None = None
) -> torch.device:
    """`device` as a torch.device this machine can run on. "auto": `auto_device()`; None: where `model`'s
    parameters are (auto without a model); a name (cpu, cuda, cuda:N, mps) must be one this machine has,
    else a DeviceError naming it and what is available."""
    if device is None and model is not None:
        return next(model.parameters()).device
    if device is None or device == "auto":
        return auto_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(
            f"device {device!r}: unknown device name; use auto, cpu, cuda, cuda:N or mps"
        ) from err
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
    elif dev.type not in DEVICE_TYPES:
        raise DeviceError(f"device {device!r}: only cpu, cuda and mps devices are supported")
    return dev
