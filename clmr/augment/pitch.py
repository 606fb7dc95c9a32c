"""Pitch shift that keeps tempo and length: a batched, phase-locked phase vocoder plus resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clmr.augment.base import (
    AugmentError,
    Params,
    Step,
    Workspace,
    check_range,
    check_sample_rate,
    real_size,
)


class PitchShift(Step):
    """Shifts pitch by c cents, c ~ integers in [100 * min_semitones, 100 * max_semitones] (reference p = 0.6).

    Each example is time-stretched by r = 2^(c / 1200) with a phase vocoder (STFT frames of about
    `window_ms`, hop a quarter of that, frames read at 1 / r of the synthesis rate, magnitudes
    interpolated, phases advanced by each bin's measured frequency), then read back at r times the sample
    rate: every frequency is scaled by r while length and onset times stay put. Identity phase locking
    (every bin turns with the strongest bin within `lock_bins`) keeps the bins of one partial coherent, so
    a tone keeps its level at any frequency. Bins that the read-out would fold above the Nyquist
    frequency are dropped first (anti-aliasing). All examples run at once (per-example frame positions,
    gathers, one cumulative product over time); transients are smeared over about one window.
    """

    name = "pitch"
    cpu_block_samples = 1 << 17  # 2 crops of 59,049 samples: the (frames x bins) intermediates stay cached

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.6,
        min_semitones: float = -7.0,
        max_semitones: float = 7.0,
        window_ms: float = 30.0,
        lock_bins: int = 2,
    ) -> None:
        super().__init__(p)
        self.sample_rate = check_sample_rate(self.name, sample_rate)
        low, high = check_range(self.name, "(min_semitones, max_semitones)", (min_semitones, max_semitones))
        self.min_cents, self.max_cents = int(round(100 * low)), int(round(100 * high))
        if not float(window_ms) * self.sample_rate >= 16_000:  # at least 16 samples per frame
            raise AugmentError(f"augmentation 'pitch': window_ms={window_ms!r} is under 16 samples")
        if int(lock_bins) < 0:
            raise AugmentError(f"augmentation 'pitch': lock_bins must be >= 0, got {lock_bins!r}")
        self.n_fft = 1 << max(4, round(math.log2(float(window_ms) * self.sample_rate / 1000.0)))
        self.hop = self.n_fft // 4
        self.lock_bins = int(lock_bins)

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        cents = torch.randint(self.min_cents, self.max_cents + 1, (n,), device=device, generator=generator)
        return {"cents": cents.float()}

    def stretched_length(self, ratio: torch.Tensor | None, length: int) -> int:
        """Samples of the time-stretched signal the read-out needs: from the drawn ratios on CPU (no sync
        cost there), from the largest ratio the step can draw elsewhere (no host sync on an accelerator)
        or when no ratios are given."""
        top = 2.0 ** (self.max_cents / 1200)
        if ratio is not None and ratio.device.type == "cpu":
            top = ratio.max().item()
        return math.ceil(length * max(1.0, top)) + 2

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        # complex (frames x bins) analysis and (synthesis frames x bins) synthesis tensors: about 12 reals
        # per cell measured at the largest shift (float32: 14 MB for a 59,049-sample crop at +7), 13 stated
        frames = length // self.hop + 1
        steps = (self.stretched_length(None, length) + self.n_fft) // self.hop + 1
        cells = (frames + steps) * (self.n_fft // 2 + 1)
        return 2 * length * dtype.itemsize + 13 * cells * real_size(dtype)

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        batch, length = x.shape
        device = x.device
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        n_fft, hop = self.n_fft, self.hop
        ratio = torch.exp2(params["cents"].to(device=device, dtype=real) / 1200.0)
        window = torch.hann_window(n_fft, device=device, dtype=real)
        spec = torch.stft(
            x.to(real), n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True
        )
        bins, frames = spec.shape[-2:]
        spec = spec.transpose(1, 2).reshape(batch * frames, bins)  # one analysis frame per row
        magnitude = spec.abs()
        # unit phasors; a silent bin gets phase 0 (a zero would end the running product below)
        phasor = torch.where(magnitude > 0, spec / magnitude.clamp_min(torch.finfo(real).tiny), 1.0)
        # synthesis frame k reads analysis position k / r: rows i0 and i0 + 1 of each example
        stretched = self.stretched_length(ratio, length)
        steps = (stretched + n_fft) // hop + 1  # every sample read is inside a full overlap of frames
        position = (torch.arange(steps, device=device, dtype=real) / ratio[:, None]).clamp_(max=frames - 1)
        first = position.floor()
        frac = (position - first).view(-1, 1)
        offset = torch.arange(batch, device=device)[:, None] * frames
        row0 = (first.long() + offset).view(-1)
        row1 = ((first.long() + 1).clamp_(max=frames - 1) + offset).view(-1)
        mag = torch.lerp(magnitude[row0], magnitude[row1], frac).view(batch, steps, bins)
        phase0 = phasor[row0].view(batch, steps, bins)
        # each synthesis frame turns by the phase its analysis position advances in one hop (a phasor
        # product, so no angle unwrapping); the first frame starts at the analysis phase
        turn = phasor[row1].view(batch, steps, bins) * phase0.conj()
        turn = torch.cat((phase0[:, :1], turn[:, :-1]), 1).cumprod_(1)
        if self.lock_bins > 0:  # identity phase locking: a bin keeps its phase relative to its peak
            _, peak = F.max_pool1d(
                mag.view(-1, 1, bins), 2 * self.lock_bins + 1, 1, self.lock_bins, return_indices=True
            )
            turn = (turn * phase0.conj()).gather(2, peak.view(batch, steps, bins)).mul_(phase0)
        nyquist = (bins - 1) / ratio[:, None, None]  # read-out at r: bins above (bins - 1) / r would fold
        folded = torch.arange(bins, device=device) > nyquist
        mag = mag.masked_fill_(folded, 0.0)
        # the share of the input's energy that the shift keeps (all of it, less the folded band)
        power = magnitude.square().view(batch, frames, bins)
        kept = power.masked_fill(folded, 0.0).sum((1, 2)) / power.sum((1, 2)).clamp_min(
            torch.finfo(real).tiny
        )
        y = torch.istft(
            (turn * mag).transpose(1, 2), n_fft, hop, window=window, center=True, length=stretched
        )
        # read the stretched signal at r x the sample rate (linear interpolation)
        t = torch.arange(length, device=device, dtype=real) * ratio[:, None]
        left = t.floor()
        out = torch.lerp(y.gather(1, left.long()), y.gather(1, left.long() + 1), t - left)
        # overlap-adding frames whose phases no longer agree (noise, partials sharing a window) loses up
        # to 3 dB; like sox's shifter, keep the level: scale to the input's energy times the kept share
        have = out.square().sum(1)
        want = x.to(real).square().sum(1) * kept
        gain = torch.where(have > 0, want / have.clamp_min(torch.finfo(real).tiny), 0.0).sqrt_()
        return torch.where(ratio[:, None] == 1.0, x, (out * gain[:, None]).to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, cents=[{self.min_cents}, {self.max_cents}], "
            f"n_fft={self.n_fft}, hop={self.hop}, lock_bins={self.lock_bins}"
        )
