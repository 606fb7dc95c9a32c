"""Room reverb: dry + FFT convolution with exponentially decaying, frequency-dependently damped noise."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import Params, Step, Workspace, check_range, check_sample_rate, place, uniform
from clmr.augment.filter import fft_size

IR_SECONDS = 1.0  # impulse responses are cut (with a fade) after this long
_BASIS_RATIO = 1.6  # successive decay times of the shared impulse-response basis
_DAMPING_HZ = 2000.0  # the damping weight f / (f + _DAMPING_HZ) reaches 1/2 here
_LN1000 = math.log(1000.0)
_BANDS = 64  # damping sets one decay time per band of the spectrum
_NOISE_SEED = 20210517  # the noise under every impulse response is fixed, as Freeverb's structure is


def decay_seconds(room_size: torch.Tensor, reverberance: torch.Tensor) -> torch.Tensor:
    """Reverb time T60 (s) at low frequencies: grows with room size and with reverberance (both in [0, 100])."""
    return 0.05 + 3.0 * (0.1 + 0.009 * room_size) * (0.1 + 0.009 * reverberance)


class Reverb(Step):
    """Dry + wet room reverb; room_size, reverberance, damping ~ U[range) each (reference p = 0.6).

    The wet path convolves with noise under an exponential envelope whose T60 is `decay_seconds` at low
    frequencies and T60 / (1 + 4 * damping / 100 * f / (f + 2 kHz)) in the band around f (64 bands), so highs die out faster
    with damping. The noise is one fixed draw (like sox's Freeverb, the response is a deterministic function
    of the parameters): a basis of unit-energy impulse responses with log-spaced decay times is transformed
    once per crop length and cached, and each example's response is interpolated from it per band (one
    batched matrix product, which also adds the dry path); the convolution is one rfft/irfft per
    example. Output: (dry + wet) / sqrt(2).
    """

    name = "reverb"
    cpu_block_samples = 1 << 20

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.6,
        room_size: tuple[float, float] = (0.0, 100.0),
        reverberance: tuple[float, float] = (0.0, 100.0),
        damping: tuple[float, float] = (0.0, 100.0),
    ) -> None:
        super().__init__(p)
        self.sample_rate = check_sample_rate(self.name, sample_rate)
        self.room_size = check_range(self.name, "room_size", room_size, 0.0, 100.0)
        self.reverberance = check_range(self.name, "reverberance", reverberance, 0.0, 100.0)
        self.damping = check_range(self.name, "damping", damping, 0.0, 100.0)
        # decay times the basis must span: the shortest damped one up to the longest undamped one
        zero = torch.zeros(())
        self.t60_min = float(decay_seconds(zero, zero)) / 5.0
        self.t60_max = float(decay_seconds(zero + 100.0, zero + 100.0))
        self.n_basis = math.ceil(math.log(self.t60_max / self.t60_min) / math.log(_BASIS_RATIO)) + 1
        self._basis: dict[tuple[int, int, str], torch.Tensor] = {}

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {
            "room_size": uniform(n, *self.room_size, device, generator),
            "reverberance": uniform(n, *self.reverberance, device, generator),
            "damping": uniform(n, *self.damping, device, generator),
        }

    def basis(self, ir_length: int, n_fft: int, device: torch.device) -> torch.Tensor:
        """Spectra of unit-energy decaying-noise impulse responses (T60 = t60_min * ratio^j) cut into bands.

        Returns (_BANDS, J + 1, 2 * width): [k, j] is band k of basis j's spectrum as real pairs, divided by
        sqrt(2); [k, J] is the dry path, 1 / sqrt(2) in every bin. Cached per crop length.
        """
        key = (ir_length, n_fft, str(device))
        if key not in self._basis:
            noise = torch.randn(ir_length, generator=torch.Generator().manual_seed(_NOISE_SEED)).to(device)
            t = torch.arange(ir_length, device=device, dtype=torch.float32) / self.sample_rate
            t60 = self.t60_min * _BASIS_RATIO ** torch.arange(
                self.n_basis, device=device, dtype=torch.float32
            )
            envelope = torch.exp(-_LN1000 * t[None, :] / t60[:, None])
            fade = torch.linspace(1.0, 0.0, max(ir_length // 10, 1), device=device)
            envelope[:, ir_length - fade.numel() :] *= fade
            irs = envelope * noise
            irs = irs / irs.norm(dim=1, keepdim=True).clamp_min(1e-12)
            dry = torch.zeros(1, irs.shape[1], device=device)
            dry[0, 0] = 1.0
            spectra = torch.fft.rfft(torch.cat((irs, dry)), n=n_fft) * math.sqrt(0.5)
            width = -(-spectra.shape[1] // _BANDS)
            spectra = torch.cat(
                (spectra, spectra.new_zeros(self.n_basis + 1, width * _BANDS - spectra.shape[1])), 1
            )
            bands = torch.view_as_real(spectra).view(self.n_basis + 1, _BANDS, 2 * width)
            self._basis = {key: bands.transpose(0, 1).contiguous()}
        return self._basis[key]

    def sizes(self, length: int) -> tuple[int, int]:
        """(impulse-response length, FFT size) for inputs of `length` samples."""
        ir_length = min(length, max(1, round(IR_SECONDS * self.sample_rate)))
        return ir_length, fft_size(length + ir_length)

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        if dtype != torch.float32:
            return None
        return work.get("padded", (batch, self.sizes(length)[1]), dtype, device)[:, :length]

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        work = work or Workspace()
        batch, length = x.shape
        ir_length, n_fft = self.sizes(length)
        table = self.basis(ir_length, n_fft, x.device)
        width, n_freqs = table.shape[2] // 2, n_fft // 2 + 1
        centres = (torch.arange(_BANDS, device=x.device) + 0.5) * (width * self.sample_rate / n_fft)
        t60 = decay_seconds(params["room_size"].float(), params["reverberance"].float())
        slowdown = 0.04 * params["damping"].float()[:, None] * (centres / (centres + _DAMPING_HZ))[None, :]
        # position of each example's per-band T60 on the basis' log-spaced decay axis
        u = torch.log(t60 / self.t60_min)[:, None] - torch.log1p(slowdown)
        u = u.mul_(1.0 / math.log(_BASIS_RATIO)).clamp_(0.0, self.n_basis - 1.001)
        j = u.floor()
        frac = u.sub_(j)[..., None]
        j = j.long()[..., None]
        # per example and band: 1 - frac times basis j, frac times basis j + 1, plus the dry path
        weights = torch.zeros(batch, _BANDS, self.n_basis + 1, device=x.device)
        weights.scatter_(2, j, 1.0 - frac).scatter_(2, j + 1, frac)
        weights[..., -1] = 1.0
        response = work.get("response", (_BANDS, batch, 2 * width), table.dtype, x.device)
        torch.bmm(weights.transpose(0, 1), table, out=response)
        response = torch.view_as_complex(response.view(_BANDS, batch, width, 2)).transpose(0, 1)
        padded = work.get("padded", (batch, n_fft), torch.float32, x.device)
        place(padded[:, :length], x)
        padded[:, length:] = 0.0
        spectrum = torch.fft.rfft(padded)  # (out= would only add a copy)
        full, rest = divmod(n_freqs, width)
        spectrum[:, : full * width].view(batch, full, width).mul_(response[:, :full])
        if rest:
            spectrum[:, full * width :].mul_(response[:, full, :rest])
        return torch.fft.irfft(spectrum, n=n_fft)[:, :length].to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, room_size={self.room_size}, "
            f"reverberance={self.reverberance}, damping={self.damping}"
        )
