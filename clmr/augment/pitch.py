"""Pitch shift that keeps tempo and length: a batched two-head delay-line (granular) shifter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clmr.augment.base import Params, Step, Workspace, place


class PitchShift(Step):
    """Shifts pitch by c cents, c ~ integers in [100 * min_semitones, 100 * max_semitones] (reference p = 0.6).

    Two read heads sweep through the signal at speed 2^(c / 1200), each jumping back (or ahead) by one
    window when it drifts `window_ms` away, and are cross-faded with complementary sin^2 weights that are
    zero at the jumps. Every output sample therefore reads the input within +-window/2 of its own time:
    the length and the onset times stay put while every frequency is scaled. All examples run at once
    (per-example speed vectors; one linear-interpolating `grid_sample` reads both heads); no FFT, so it is
    cheap on CPU as well as on GPU. Pitching up reads faster than the sample rate without an anti-alias
    filter (content above sr / 2 / ratio folds).
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
        """Edge padding before the input: the heads read up to window / 2 + 1 samples away."""
        return self.window // 2 + 2

    def row_width(self, length: int) -> int:
        """Padded row length 2^k + 1 (>= length + 2 * pad + 1): `grid_sample` then maps whole-sample read
        positions exactly, so that no shift is exactly the identity."""
        return (1 << (length + 2 * self.pad()).bit_length()) + 1

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        if dtype not in (torch.float32, torch.float64):
            return None
        pad = self.pad()
        return work.get("padded", (batch, self.row_width(length)), dtype, device)[:, pad : pad + length]

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
        t = torch.arange(length, device=device, dtype=real)
        phase = work.get("phase", (batch, 2, length), real, device)
        torch.addmm(
            start.view(-1, 1),
            speed[:, None].expand(batch, 2).reshape(-1, 1),
            t[None],
            out=phase.view(-1, length),
        )
        phase.frac_()
        weight0 = work.get("weight", (batch, length), real, device)
        torch.mul(phase[:, 0], math.pi, out=weight0).sin_().square_()  # head 1 gets 1 - weight0
        # the input, edge-padded, as images of height 1; head h reads position t + pad + window / 2 -
        # window * phase, which is grid_sample's x coordinate scaled to [-1, 1] (y stays 0)
        pad, width = self.pad(), self.row_width(length)
        half = (width - 1) / 2
        padded = work.get("padded", (batch, width), real, device)
        place(padded[:, pad : pad + length], x)
        padded[:, :pad] = padded[:, pad : pad + 1]
        padded[:, pad + length : 2 * pad + length + 1] = padded[:, pad + length - 1 : pad + length]
        # per row the x coordinates of both heads, then their y coordinates (zeros, made once per call)
        coords = work.get("coords", (batch, 2, 2, length), real, device, zero=True)
        step = 1.0 / half
        base = t.mul_(step).add_((pad + window / 2) * step - 1)
        torch.add(base, phase, alpha=-window * step, out=coords[:, 0])
        grid = coords.permute(0, 2, 3, 1)  # (B, 2, T, 2)
        heads = F.grid_sample(
            padded.view(batch, 1, 1, width), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]
        out = work.get("out", (batch, length), real, device)
        return torch.lerp(heads[:, 1], heads[:, 0], weight0, out=out).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, cents=[{self.min_cents}, {self.max_cents}], "
            f"window={self.window}"
        )
