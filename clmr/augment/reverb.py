"""Room reverb: dry + FFT convolution with exponentially decaying, frequency-dependently damped noise."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import Params, Step, uniform
from clmr.augment.filter import fft_size

IR_SECONDS = 1.0  # impulse responses are cut (with a fade) after this long
_BASIS_RATIO = 1.25  # successive decay times of the shared impulse-response basis
_DAMPING_HZ = 2000.0  # the damping weight f / (f + _DAMPING_HZ) reaches 1/2 here
_LN1000 = math.log(1000.0)


def decay_seconds(room_size: torch.Tensor, reverberance: torch.Tensor) -> torch.Tensor:
    """Reverb time T60 (s) at low frequencies: grows with room size and with reverberance (both in [0, 100])."""
    return 0.05 + 3.0 * (0.1 + 0.009 * room_size) * (0.1 + 0.009 * reverberance)


class Reverb(Step):
    """Dry + wet room reverb; room_size, reverberance, damping ~ U[range) each (reference p = 0.6).

    The wet path convolves with noise under an exponential envelope whose T60 is `decay_seconds` at low
    frequencies and T60 / (1 + 4 * damping / 100 * f / (f + 2 kHz)) at frequency f, so highs die out faster
    with damping. For speed the batch shares one noise draw: a basis of unit-energy impulse responses with
    log-spaced decay times is transformed once, and each example's response is interpolated from it per
    frequency bin; the convolution is one rfft/irfft per example. Output: (dry + wet) / sqrt(2).
    """

    name = "reverb"

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.6,
        room_size: tuple[float, float] = (0.0, 100.0),
        reverberance: tuple[float, float] = (0.0, 100.0),
        damping: tuple[float, float] = (0.0, 100.0),
    ) -> None:
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.room_size = (float(room_size[0]), float(room_size[1]))
        self.reverberance = (float(reverberance[0]), float(reverberance[1]))
        self.damping = (float(damping[0]), float(damping[1]))
        # decay times the basis must span: the shortest damped one up to the longest undamped one
        zero = torch.zeros(())
        self.t60_min = float(decay_seconds(zero, zero)) / 5.0
        self.t60_max = float(decay_seconds(zero + 100.0, zero + 100.0))
        self.n_basis = math.ceil(math.log(self.t60_max / self.t60_min) / math.log(_BASIS_RATIO)) + 1

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {
            "room_size": uniform(n, *self.room_size, device, generator),
            "reverberance": uniform(n, *self.reverberance, device, generator),
            "damping": uniform(n, *self.damping, device, generator),
        }

    def basis(self, ir_length: int, n_fft: int, device: torch.device, generator: torch.Generator | None):
        """Spectra (J, F) of unit-energy decaying-noise impulse responses, T60 = t60_min * ratio^j."""
        t = torch.arange(ir_length, device=device, dtype=torch.float32) / self.sample_rate
        t60 = self.t60_min * _BASIS_RATIO ** torch.arange(self.n_basis, device=device, dtype=torch.float32)
        fade = torch.linspace(1.0, 0.0, max(ir_length // 10, 1), device=device)
        envelope = torch.exp(-_LN1000 * t[None, :] / t60[:, None])
        envelope[:, ir_length - fade.numel() :] *= fade
        noise = torch.randn(ir_length, device=device, generator=generator)
        irs = envelope * noise
        irs = irs / irs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.fft.rfft(irs, n=n_fft)

    def apply(
        self, x: torch.Tensor, params: Params, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        length = x.shape[1]
        ir_length = min(length, max(1, round(IR_SECONDS * self.sample_rate)))
        n_fft = fft_size(length + ir_length)
        spectra = self.basis(ir_length, n_fft, x.device, generator)  # (J, F)
        freqs = torch.fft.rfftfreq(n_fft, 1.0 / self.sample_rate, device=x.device)
        t60 = decay_seconds(params["room_size"].float(), params["reverberance"].float())
        weight = freqs / (freqs + _DAMPING_HZ)
        t60_f = t60[:, None] / (1.0 + 0.04 * params["damping"].float()[:, None] * weight[None, :])  # (B, F)
        u = (torch.log(t60_f / self.t60_min) / math.log(_BASIS_RATIO)).clamp_(0.0, self.n_basis - 1.001)
        j = u.floor()
        frac = (u - j).to(spectra.dtype)
        flat = j.long() * freqs.numel() + torch.arange(freqs.numel(), device=x.device)
        spectra = spectra.reshape(-1)
        response = torch.lerp(spectra[flat], spectra[flat + freqs.numel()], frac)
        wet = torch.fft.irfft(torch.fft.rfft(x.float(), n=n_fft) * response, n=n_fft)[:, :length]
        return ((x.float() + wet) * math.sqrt(0.5)).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, room_size={self.room_size}, "
            f"reverberance={self.reverberance}, damping={self.damping}"
        )
