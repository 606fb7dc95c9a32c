"""High- or low-pass filtering as julius does it (Hann-windowed sinc, replicate padding), batched by FFT."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import (
    AugmentError,
    Params,
    Step,
    Workspace,
    check_range,
    check_sample_rate,
    real_size,
    uniform,
)

ZERO_CROSSINGS = 8  # julius' default `zeros`: the kernel spans this many zero crossings of the sinc


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


def half_sizes(cutoff: torch.Tensor) -> torch.Tensor:
    """julius' kernel half size int(zeros / cutoff / 2) per example, cutoff in cycles per sample (float64)."""
    return (ZERO_CROSSINGS / cutoff.double() / 2).floor().long()


def lowpass_kernels(cutoff: torch.Tensor, half: torch.Tensor, width: int) -> torch.Tensor:
    """(B, 2 * width + 1) julius low-pass kernels: 2c * hann(2h + 1) * sinc(2 pi c t), summing to 1.

    Row b is julius' `LowPassFilters([cutoff[b]])` filter (half size `half[b]` <= width) centred in zeros.
    """
    t = torch.arange(-width, width + 1, device=cutoff.device, dtype=torch.float64)
    c, h = cutoff.double()[:, None], half.double()[:, None]
    window = torch.where(t.abs() <= h, 0.5 + 0.5 * torch.cos(math.pi * t / h.clamp_min(1.0)), 0.0)
    kernel = 2 * c * window * torch.sinc(2 * c * t)
    return kernel / kernel.sum(dim=1, keepdim=True)


class HighLowPass(Step):
    """Per example a coin flip between a high-pass (cutoff ~ U[highpass_hz]) and a low-pass (cutoff ~ U[lowpass_hz]).

    Reference p = 0.8. With `reference_rate` (e.g. 22050, the rate the reference's ranges are for) both
    ranges are scaled by sample_rate / reference_rate, so they keep their place in the band at any rate.
    The filter is julius' `lowpass_filter` / `highpass_filter` at cutoff / sample_rate
    (a Hann-windowed sinc over 8 zero crossings, the input edge-replicated by the kernel's half size; a
    high-pass is the input minus the low-pass), one kernel per example, applied by one batched FFT multiply.
    """

    name = "filter"
    cpu_block_samples = 1 << 20

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.8,
        lowpass_hz: tuple[float, float] = (2200.0, 4000.0),
        highpass_hz: tuple[float, float] = (200.0, 1200.0),
        reference_rate: float | None = None,
    ) -> None:
        super().__init__(p)
        self.sample_rate = check_sample_rate(self.name, sample_rate)
        nyquist = self.sample_rate / 2
        if reference_rate is not None:  # ranges given at reference_rate, scaled to this rate's band
            if isinstance(reference_rate, bool) or not float(reference_rate) > 0:
                raise AugmentError(
                    f"augmentation 'filter': reference_rate must be > 0 Hz, got {reference_rate!r}"
                )
            scale = self.sample_rate / float(reference_rate)
            lowpass_hz = tuple(scale * f for f in check_range(self.name, "lowpass_hz", lowpass_hz))
            highpass_hz = tuple(scale * f for f in check_range(self.name, "highpass_hz", highpass_hz))
        self.lowpass_hz = check_range(self.name, "lowpass_hz", lowpass_hz, 0.0, nyquist)
        self.highpass_hz = check_range(self.name, "highpass_hz", highpass_hz, 0.0, nyquist)
        lowest = min(self.lowpass_hz[0], self.highpass_hz[0])
        if lowest <= 0.0:
            raise AugmentError(f"augmentation 'filter': cutoffs must be > 0 Hz, got {lowest:g}")
        # the widest kernel that the drawn cutoffs need
        self.max_half = int(half_sizes(torch.tensor([lowest / self.sample_rate]))[0])

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        highpass = torch.rand(n, device=device, generator=generator) < 0.5
        low = uniform(n, *self.lowpass_hz, device, generator)
        high = uniform(n, *self.highpass_hz, device, generator)
        return {"highpass": highpass, "cutoff": torch.where(highpass, high, low)}

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        # kernel, padded input, their spectra, the product and its inverse: six reals per FFT point
        # (float32: 1.3 MB for a 59,049-sample crop), seven stated
        return 2 * length * dtype.itemsize + 7 * fft_size(length + 2 * self.max_half) * real_size(dtype)

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        batch, length = x.shape
        cutoff = params["cutoff"].to(x.device).double().clamp(min=1e-9, max=self.sample_rate / 2)
        cutoff = cutoff / self.sample_rate
        half = half_sizes(cutoff)
        # the configured range bounds the kernels (the same FFT size for any batch); on CPU, where it costs
        # no host sync, forced cutoffs below the range widen it, elsewhere their kernels are cut to it
        width = max(self.max_half, int(half.max())) if x.device.type == "cpu" else self.max_half
        half = half.clamp_(max=width)
        n_fft = fft_size(length + 2 * width)
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        kernels = x.new_zeros(batch, n_fft, dtype=real)
        kernels[:, : 2 * width + 1] = lowpass_kernels(cutoff, half, width)
        padded = torch.nn.functional.pad(x.to(real)[:, None], (width, width), mode="replicate")[:, 0]
        response = torch.fft.rfft(kernels)
        highpass = params["highpass"].to(x.device)[:, None]
        # x - lowpass(x) for a high-pass: 1 - response at every frequency (a delta at the kernel's centre)
        centre = torch.polar(
            torch.ones((), device=x.device, dtype=real),
            (-2 * math.pi * width / n_fft) * torch.arange(response.shape[1], device=x.device, dtype=real),
        )
        response = torch.where(highpass, centre - response, response)
        out = torch.fft.irfft(torch.fft.rfft(padded, n=n_fft) * response, n=n_fft)
        return out[:, 2 * width : 2 * width + length].to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, lowpass_hz={self.lowpass_hz}, "
            f"highpass_hz={self.highpass_hz}"
        )
