"""The reference augmentation chain with every step switchable or re-weightable from a config mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clmr.augment.base import AugmentError, Step, check_sample_rate, check_scratch_mb
from clmr.augment.delay import Delay
from clmr.augment.filter import HighLowPass
from clmr.augment.gain import Gain
from clmr.augment.noise import Noise
from clmr.augment.pitch import PitchShift
from clmr.augment.polarity import PolarityInversion
from clmr.augment.reverb import Reverb
from clmr.limits import AUGMENT_SCRATCH_MB

# step name -> (class, needs sample_rate), in reference order
STEPS: dict[str, tuple[type[Step], bool]] = {
    "polarity": (PolarityInversion, False),
    "noise": (Noise, False),
    "gain": (Gain, False),
    "filter": (HighLowPass, True),
    "delay": (Delay, True),
    "pitch": (PitchShift, True),
    "reverb": (Reverb, True),
}


def build_step(name: str, override: float | Mapping[str, Any] | None, sample_rate: int) -> Step:
    """One step from its override: None (reference), a probability, or a dict of keyword arguments."""
    cls, needs_rate = STEPS[name]
    if override is None:
        kwargs: dict[str, Any] = {}
    elif isinstance(override, Mapping):
        kwargs = dict(override)
    elif isinstance(override, (int, float)) and not isinstance(override, bool):
        kwargs = {"p": float(override)}
    else:
        raise AugmentError(f"augmentation '{name}': expected a probability or a mapping, got {override!r}")
    if needs_rate:
        kwargs["sample_rate"] = sample_rate
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise AugmentError(f"augmentation '{name}': {err}") from None


class Chain(nn.Module):
    """polarity -> noise -> gain -> filter -> delay -> pitch -> reverb on a batch (B, T), each step per example.

    `Chain(sample_rate, pitch=0.0, reverb={"p": 0.3, "damping": (0, 50)})`: an override is a probability
    or a dict of the step's keyword arguments (a dict without "p" keeps the reference probability).
    Pure torch: runs on the batch's device; `generator` (or the device's default generator) seeds every draw.
    Each step works through the batch in chunks whose scratch memory stays within `scratch_mb` MB (None:
    one chunk), see `scratch_bound`; the output does not depend on it.
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        scratch_mb: float | None = AUGMENT_SCRATCH_MB,
        **overrides: float | Mapping[str, Any] | None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(overrides) - set(STEPS))
        if unknown:
            raise AugmentError(f"unknown augmentation step '{unknown[0]}' (steps: {', '.join(STEPS)})")
        self.sample_rate = check_sample_rate("chain", sample_rate)
        self.steps = nn.ModuleDict(
            {name: build_step(name, overrides.get(name), self.sample_rate) for name in STEPS}
        )
        budget = check_scratch_mb(scratch_mb)
        for step in self.steps.values():
            step.scratch_bytes = budget

    def scratch_bound(self, length: int, dtype: torch.dtype = torch.float32) -> int | None:
        """Bytes of scratch memory a call on (B, length) of `dtype` may take besides its output, for any B:
        the largest step's chunk (at most `scratch_mb`, or one chunk's minimum where an example needs more);
        None when `scratch_mb` is None (one chunk: it grows with B)."""
        if any(step.scratch_bytes is None for step in self.steps.values()):
            return None
        return max(
            step.chunk_rows(length, dtype, torch.device("meta")) * step.scratch_per_example(length, dtype)
            for step in self.steps.values()
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], sample_rate: int = 22050) -> Chain:
        """A chain from a mapping step name -> probability or kwargs dict; `enabled: false` switches all off.

        Keys: polarity, noise, gain, filter, delay, pitch, reverb, and optionally enabled, sample_rate and
        scratch_mb.
        """
        config = dict(config)
        enabled = bool(config.pop("enabled", True))
        sample_rate = int(config.pop("sample_rate", sample_rate))
        if not enabled:
            config = {name: 0.0 for name in STEPS} | {k: v for k, v in config.items() if k not in STEPS}
        return cls(sample_rate=sample_rate, **config)

    def probabilities(self) -> dict[str, float]:
        """Each step's probability, in chain order."""
        return {name: step.p for name, step in self.steps.items()}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"Chain expects a batch of shape (B, T), got {tuple(x.shape)}")
        # Every step is homogeneous (f(c x) = c f(x)), so each row runs scaled by a power of two to a peak
        # of at most 1 and is scaled back: the FFT steps' sums cannot overflow (only an output past the
        # largest float can), and scaling by powers of two is exact (the same result bit for bit otherwise).
        # (the peak from the row's extremes: no batch-sized temporary)
        low, high = torch.aminmax(x.detach(), dim=1, keepdim=True)
        _, exponent = torch.frexp(torch.maximum(low.neg_(), high).clamp_(min=0.5))
        # the largest finite power of two of the dtype (2^127 for float32): peaks above it stay <= 2
        exponent.clamp_(max=math.frexp(torch.finfo(x.dtype).max)[1] - 1)
        scale = torch.ldexp(torch.ones_like(exponent, dtype=x.dtype), exponent)
        y = x / scale
        for step in self.steps.values():
            y = step.run(y, generator, inplace=True)  # y is the chain's own tensor
        return y.mul_(scale)
