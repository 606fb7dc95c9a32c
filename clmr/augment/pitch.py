"""Pitch shift that keeps tempo and length: a batched two-head delay-line (granular) shifter."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import Params, Step, Workspace, place


class PitchShift(Step):
    """Shifts pitch by c cents, c ~ integers in [100 * min_semitones, 100 * max_semitones] (reference p = 0.6).

    Two read heads sweep through the signal at speed 2^(c / 1200), each jumping back (or ahead) by one
    window when it drifts `window_ms` away, and are cross-faded with complementary sin^2 weights that are
    zero at the jumps. Every output sample therefore reads the input within +-window/2 of its own time:
    the length and the onset times stay put while every frequency is scaled. All examples run at once
    (per-example speed vectors, two gathers); no FFT, so it is cheap on CPU as well as on GPU. Pitching up
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

    def pad(self) -> int:
        """Edge padding each side of the input: the heads read up to window / 2 + 1 samples away."""
        return self.window // 2 + 2

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        if dtype not in (torch.float32, torch.float64):
            return None
        pad = self.pad()
        return work.get("padded", (batch, length + 2 * pad + 1), dtype, device)[:, pad : pad + length]

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        work = work or Workspace()
        batch, length = x.shape
        device, window = x.device, self.window
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        # each head's phase within its window (B, 2, T) = start + t * speed (one rank-1 matrix product), kept
        # positive by a whole number of windows `lead`; head 0 starts at 0.5 so that no shift is the identity
        speed = torch.expm1(params["cents"].to(real) * (math.log(2.0) / 1200.0)).mul_(-1.0 / window)
        lead = (speed.abs() * length).floor_().add_(1.0)
        start = torch.stack((lead + 0.5, lead), 1)
        phase = work.get("phase", (batch, 2, length), real, device)
        torch.addmm(
            start.view(-1, 1),
            speed[:, None].expand(batch, 2).reshape(-1, 1),
            torch.arange(length, device=device, dtype=real)[None],
            out=phase.view(2 * batch, length),
        )
        phase.frac_()
        weight0 = work.get("weight", (batch, length), real, device)
        torch.mul(phase[:, 0], math.pi, out=weight0).sin_().square_()  # head 1 gets 1 - weight0
        # head h reads at t + window / 2 - window * phase = left + (1 - frac): left = t + window / 2 - 1 - floor(m)
        offset = phase.mul_(float(window))  # m in [0, window)
        # the input, edge-padded by pad samples each side; one int32 index into the flattened rows reads the
        # left taps, the same index into the rows shifted by one sample the right taps
        pad = self.pad()
        width = length + 2 * pad + 1
        itype = torch.int32 if batch * width < 2**31 else torch.int64
        index = work.get("index", (batch, 2, length), itype, device)
        index.copy_(offset)  # floor(m), m >= 0
        rows = torch.arange(0, batch * width, width, device=device, dtype=itype)[:, None, None]
        first = window // 2 - 1 + pad
        base = torch.arange(first, first + length, device=device, dtype=itype)
        torch.sub(rows + base, index, out=index)
        frac = offset.frac_()
        padded = work.get("padded", (batch, width), real, device)
        place(padded[:, pad : pad + length], x)
        padded[:, :pad] = padded[:, pad : pad + 1]
        padded[:, pad + length :] = padded[:, pad + length - 1 : pad + length]
        flat, index = padded.view(-1), index.view(-1)
        left = torch.index_select(
            flat, 0, index, out=work.get("left", (batch, 2, length), real, device).view(-1)
        )
        right = torch.index_select(
            flat[1:], 0, index, out=work.get("right", (batch, 2, length), real, device).view(-1)
        )
        # the left tap weighs 1 - frac: the heads' outputs overwrite their fractions
        heads = torch.lerp(right.view_as(frac), left.view_as(frac), frac, out=frac)
        out = work.get("out", (batch, length), real, device)
        return torch.lerp(heads[:, 1], heads[:, 0], weight0, out=out).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, cents=[{self.min_cents}, {self.max_cents}], "
            f"window={self.window}"
        )
