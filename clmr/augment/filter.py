"""High- or low-pass filtering with a per-example coin flip and cutoff, as one batched FFT multiply."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import Params, Step, Workspace, check_range, check_sample_rate, place, uniform

_TRANSITION = 0.25  # transition band width as a fraction of the cutoff (the -6 dB point is the cutoff)
# zero padding (seconds) that keeps the filter's two-sided tails from wrapping around; 0.2 s rather than the
# ample 0.1 s because it puts 59,049-sample crops on a 64,000-point FFT, ~15% faster in MKL than 61,440
_TAIL_S = 0.2


def fft_size(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n (fast for pocketfft and cuFFT)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 << max(math.ceil(math.log2(n / p35)), 0)
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def lowpass_response(freqs: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """Zero-phase low-pass magnitude (B, F): 1 below, 0 above, raised-cosine transition centred on the cutoff.

    This is the response of a windowed-sinc FIR (an ideal brick wall smoothed by the window's main lobe),
    sampled directly on the FFT grid, with a transition width proportional to the cutoff.
    """
    width = _TRANSITION * cutoff[:, None]
    t = ((freqs[None, :] - cutoff[:, None]) / width + 0.5).clamp_(0.0, 1.0)
    return 0.5 + 0.5 * torch.cos(math.pi * t)


class HighLowPass(Step):
    """Per example a coin flip between a high-pass (cutoff ~ U[highpass_hz]) and a low-pass (cutoff ~ U[lowpass_hz]).

    Reference p = 0.8. Applied as one rfft -> multiply -> irfft over the batch, zero-padded so the filter
    is linear (not circular) convolution.
    """

    name = "filter"
    cpu_block_samples = 1 << 20

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.8,
        lowpass_hz: tuple[float, float] = (2200.0, 4000.0),
        highpass_hz: tuple[float, float] = (200.0, 1200.0),
    ) -> None:
        super().__init__(p)
        self.sample_rate = check_sample_rate(self.name, sample_rate)
        nyquist = self.sample_rate / 2
        self.lowpass_hz = check_range(self.name, "lowpass_hz", lowpass_hz, 0.0, nyquist)
        self.highpass_hz = check_range(self.name, "highpass_hz", highpass_hz, 0.0, nyquist)
        self.max_cutoff = max(self.lowpass_hz[1], self.highpass_hz[1])  # `apply` clamps cutoffs to this

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        highpass = torch.rand(n, device=device, generator=generator) < 0.5
        low = uniform(n, *self.lowpass_hz, device, generator)
        high = uniform(n, *self.highpass_hz, device, generator)
        return {"highpass": highpass, "cutoff": torch.where(highpass, high, low)}

    def fft_length(self, length: int) -> int:
        """The FFT size for inputs of `length` samples: room for the filter's two-sided tails."""
        return fft_size(length + math.ceil(_TAIL_S * self.sample_rate))

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        if dtype != torch.float32:
            return None
        return work.get("padded", (batch, self.fft_length(length)), dtype, device)[:, :length]

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        work = work or Workspace()
        batch, length = x.shape
        n_fft = self.fft_length(length)
        cutoff = params["cutoff"].float().clamp(max=self.max_cutoff)
        # a high-pass is 1 minus the complementary low-pass, so only bins below the highest cutoff's
        # transition band need a computed response: above it every low-pass is 0 and every high-pass 1
        top = min(
            n_fft // 2 + 1, math.ceil(self.max_cutoff * (1 + _TRANSITION / 2) * n_fft / self.sample_rate) + 2
        )
        freqs = torch.arange(top, device=x.device) * (self.sample_rate / n_fft)
        highpass = params["highpass"].float()[:, None]
        response = lowpass_response(freqs, cutoff).mul_(1.0 - 2.0 * highpass).add_(highpass)
        padded = work.get("padded", (batch, n_fft), torch.float32, x.device)
        place(padded[:, :length], x)
        padded[:, length:] = 0.0
        spectrum = torch.fft.rfft(padded)  # (out= would only add a copy)
        spectrum[:, :top] *= response
        spectrum[:, top:] *= highpass
        return torch.fft.irfft(spectrum, n=n_fft)[:, :length].to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, lowpass_hz={self.lowpass_hz}, "
            f"highpass_hz={self.highpass_hz}"
        )
