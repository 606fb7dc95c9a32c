"""Pitch shift that keeps tempo and length: a batched two-head delay-line (granular) shifter."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import Params, Step


class PitchShift(Step):
    """Shifts pitch by c cents, c ~ integers in [100 * min_semitones, 100 * max_semitones] (reference p = 0.6).

    Two read heads sweep through the signal at speed 2^(c / 1200), each jumping back (or ahead) by one
    window when it drifts `window_ms` away, and are cross-faded with complementary sin^2 weights that are
    zero at the jumps. Every output sample therefore reads the input within +-window/2 of its own time:
    the length and the onset times stay put while every frequency is scaled. All examples run at once
    (per-example speed vectors, one gather); no FFT, so it is cheap on CPU as well as on GPU. Pitching up
    reads faster than the sample rate without an anti-alias filter (content above sr / 2 / ratio folds).
    """

    name = "pitch"
    cpu_block_samples = 1 << 18

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.6,
        min_semitones: float = -7.0,
        max_semitones: float = 7.0,
        window_ms: float = 50.0,
    ) -> None:
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.min_cents = int(round(100 * float(min_semitones)))
        self.max_cents = int(round(100 * float(max_semitones)))
        self.window = max(2, int(round(window_ms * self.sample_rate / 1000.0)))

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        cents = torch.randint(self.min_cents, self.max_cents + 1, (n,), device=device, generator=generator)
        return {"cents": cents.float()}

    def apply(
        self, x: torch.Tensor, params: Params, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch, length = x.shape
        window = float(self.window)
        speed = (1.0 - torch.pow(2.0, params["cents"].float() / 1200.0)) / window
        t = torch.arange(length, device=x.device, dtype=torch.float32)
        # phase of each head within its window (B, 2, T); head 0 starts at 0.5 so that no shift is identity
        start = (0.5 - 0.5 * torch.arange(2, device=x.device, dtype=torch.float32))[:, None]  # no host copy
        phase = torch.addcmul(start, t, speed[:, None, None])
        phase.sub_(phase.floor())
        weight0 = torch.sin(math.pi * phase[:, 0]).square_()  # head 1 gets 1 - weight0
        pos = phase.mul_(-window).add_(t + 0.5 * window).clamp_(0.0, length - 1)
        left = pos.floor()
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        frac = pos.sub_(left).view(batch, -1).to(work)
        # (x[i], x[i + 1]) pairs as one complex number each: one gather reads both interpolation taps
        pairs = torch.empty(batch, length, 2, device=x.device, dtype=work)
        pairs[..., 0] = x
        pairs[:, :-1, 1] = x[:, 1:]
        pairs[:, -1, 1] = x[:, -1]
        taps = torch.gather(torch.view_as_complex(pairs), 1, left.view(batch, -1).long())
        taps = torch.view_as_real(taps)
        heads = torch.lerp(taps[..., 0], taps[..., 1], frac).view(batch, 2, length)
        return torch.lerp(heads[:, 1], heads[:, 0], weight0.to(work)).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, cents=[{self.min_cents}, {self.max_cents}], "
            f"window={self.window}"
        )
