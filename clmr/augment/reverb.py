"""Room reverb as sox's `reverb` effect (Freeverb): the comb/allpass network evaluated batched by FFT."""

from __future__ import annotations

import math

import torch

from clmr.augment.base import (
    Params,
    Step,
    Workspace,
    check_range,
    check_sample_rate,
    real_size,
    uniform,
)

# sox src/reverb.c: delay lengths in samples at 44.1 kHz, the stereo spread and the wet gain
COMB_LENGTHS = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)
ALLPASS_LENGTHS = (225, 341, 441, 556)
STEREO_ADJUST = 12
WET_GAIN = 0.015  # dB_to_linear(0 dB wet gain) * .015
_A = -1 / math.log(1 - 0.3)  # reverb_create: feedback 0.3 at reverberance 0 ...
_B = 100 / (math.log(1 - 0.98) * _A + 1)  # ... and 0.98 at reverberance 100
# the response is evaluated on a circle of radius 1 / a (a^n weighting): the circular FFT's wrap-around
# of the infinite tail is then scaled by a^n_fft = _ALIAS, so one FFT as long as the input is enough
_ALIAS = 1e-4
# bins k = hi + lo (hi a multiple of _LOW, lo < _LOW): a comb's z^N at every bin is the outer product of
# its values at the hi and at the lo bins (two short gathers instead of one per bin)
_LOW = 128


def padded_bins(n_fft: int) -> int:
    """The rfft's n_fft // 2 + 1 bins rounded up to a multiple of _LOW."""
    return -(-(n_fft // 2 + 1) // _LOW) * _LOW


def fft_length(length: int) -> int:
    """The FFT size for a crop: a power of two >= length (so that k N mod n_fft is a bitwise and)."""
    return 1 << max(length - 1, 1).bit_length()


def damped_shift(n: torch.Tensor, n_fft: int) -> torch.Tensor:
    """z^-n (complex128) at the damped grid points z_k = e^(2 pi i k / n_fft) / a, k < padded_bins."""
    k = torch.arange(padded_bins(n_fft), device=n.device, dtype=torch.float64)
    angle = (-2 * math.pi / n_fft) * ((k * n.double()) % n_fft)
    return torch.polar(torch.exp(n.double() * (math.log(_ALIAS) / n_fft)), angle)


def delay_lengths(sample_rate: int, room_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sox's delay lines for room scale (B,) in %: combs (B, 2, 8) and allpasses (2, 4), int64.

    Channel 1 is sox's second (stereo-depth 100 %) filter array: lengths alternately 12 samples (at
    44.1 kHz) longer and shorter, the alternation running on from the combs into the allpasses.
    """
    r = sample_rate * (1 / 44100.0)  # filter_array_create's sample-rate compensation
    scale = room_scale.double() / 100 * 0.9 + 0.1
    signs = torch.tensor([(-1.0) ** i for i in range(len(COMB_LENGTHS) + len(ALLPASS_LENGTHS))])
    offset = torch.stack((torch.zeros_like(signs), signs)).to(room_scale.device, torch.float64)
    lengths = torch.tensor(COMB_LENGTHS + ALLPASS_LENGTHS, dtype=torch.float64, device=offset.device)
    nominal = lengths + STEREO_ADJUST * offset  # (2, 12)
    n_comb = len(COMB_LENGTHS)
    combs = ((scale * r)[:, None, None] * nominal[None, :, :n_comb] + 0.5).floor().long()
    allpasses = (r * nominal[:, n_comb:] + 0.5).floor().long()
    return combs.clamp_(min=1), allpasses.clamp_(min=1)


def feedback(reverberance: torch.Tensor) -> torch.Tensor:
    """sox's comb feedback 1 - exp((reverberance - b) / (a b)): 0.3 at 0 %, 0.98 at 100 %."""
    return 1 - torch.exp((reverberance.double() - _B) / (_A * _B))


def hf_damping(damping: torch.Tensor) -> torch.Tensor:
    """sox's one-pole low-pass coefficient in the comb loops: 0.2 at 0 %, 0.5 at 100 % HF damping."""
    return damping.double() / 100 * 0.3 + 0.2


class Reverb(Step):
    """sox `reverb <reverberance> <damping> <room_size>` mixed to mono, each ~ U[range) (reference p = 0.6).

    Like sox (src/reverb.c, `reverb_create` / `filter_array_process`): two arrays (mono input, stereo
    depth 100 %) of 8 low-pass-feedback combs in parallel into 4 Freeverb allpasses in series, delay lengths
    scaled by room size and sample rate, comb feedback from reverberance, loop low-pass from damping,
    wet gain 0.015 (0 dB), pre-delay 0; the output is dry + the mean of the two arrays (`channels 1`).
    The network is linear and time-invariant per example, so its response is evaluated on one FFT grid
    as long as the crop (the part of the tail that reaches the crop) and applied by FFT multiplication.
    """

    name = "reverb"
    cpu_block_samples = 1 << 17

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
        self._grids: dict[tuple[int, str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {
            "room_size": uniform(n, *self.room_size, device, generator),
            "reverberance": uniform(n, *self.reverberance, device, generator),
            "damping": uniform(n, *self.damping, device, generator),
        }

    def grid(self, n_fft: int, device: torch.device, real: torch.dtype) -> tuple[torch.Tensor, ...]:
        """cos and sin of 2 pi m / n_fft (m < n_fft), the allpass chains' response and z^-1 (padded bins).

        The allpass lengths depend only on the sample rate, so their part is computed once per grid.
        """
        key = (n_fft, str(device), real)
        if key not in self._grids:
            angle = torch.arange(n_fft, device=device, dtype=torch.float64) * (2 * math.pi / n_fft)
            _, allpasses = delay_lengths(self.sample_rate, torch.zeros(1, device=device))
            shift = damped_shift(allpasses[..., None], n_fft)  # (2, 4, F)
            chain = ((1.5 * shift - 1) / (1 - 0.5 * shift)).prod(dim=1)
            ctype = torch.complex128 if real == torch.float64 else torch.complex64
            unit = damped_shift(torch.ones(1, device=device), n_fft)  # z^-1
            self._grids = {key: (angle.cos().to(real), angle.sin().to(real), chain.to(ctype), unit.to(ctype))}
        return self._grids[key]

    def wet_response(
        self, params: Params, n_fft: int, device: torch.device, real: torch.dtype
    ) -> torch.Tensor:
        """(B, n_fft // 2 + 1) mean wet response of sox's two filter arrays on the damped grid."""
        cos, sin, allpass_chain, unit = self.grid(n_fft, device, real)
        combs, _ = delay_lengths(self.sample_rate, params["room_size"].to(device))
        g = feedback(params["reverberance"].to(device))[:, None]
        d = hf_damping(params["damping"].to(device))[:, None]
        # comb: y = z^-N x / (1 - g (1 - d) z^-N / (1 - d z^-1)) = x / (z^N - q), q = g (1 - d) / (1 - d z^-1)
        q = (g * (1 - d)).to(real) / (1 - d.to(real) * unit)
        batch, n_bins = q.shape
        q_re = q.real.contiguous().view(batch, 1, n_bins // _LOW, _LOW)
        q_im = q.imag.contiguous().view(batch, 1, n_bins // _LOW, _LOW)
        gains = torch.exp(combs.to(real) * (-math.log(_ALIAS) / n_fft))[..., None]  # |z^N| = a^-N
        hi = torch.arange(0, n_bins, _LOW, device=device, dtype=torch.int32)
        lo = torch.arange(_LOW, device=device, dtype=torch.int32)
        wet = torch.zeros_like(q)
        for array in range(2):  # the 8 combs of one array at once, (B, 8, bins)
            n = combs[:, array, :, None].int()
            # z^N = a^-N e^(i 2 pi k N / n_fft) = (a^-N e^(i 2 pi hi N / n_fft)) e^(i 2 pi lo N / n_fft)
            at_hi, at_lo = (((ks * n) & (n_fft - 1)).view(-1) for ks in (hi, lo))
            hi_re = torch.index_select(cos, 0, at_hi).view(*n.shape[:2], -1, 1).mul_(gains[:, array, :, None])
            hi_im = torch.index_select(sin, 0, at_hi).view(*n.shape[:2], -1, 1).mul_(gains[:, array, :, None])
            lo_re = torch.index_select(cos, 0, at_lo).view(*n.shape[:2], 1, -1)
            lo_im = torch.index_select(sin, 0, at_lo).view(*n.shape[:2], 1, -1)
            v_re = (hi_re * lo_re).addcmul_(hi_im, lo_im, value=-1.0).sub_(q_re)
            v_im = (hi_re * lo_im).addcmul_(hi_im, lo_re).sub_(q_im)
            # sum of 1 / (z^N - q) in real arithmetic (complex division is slow on CPUs)
            norm = (v_re * v_re).addcmul_(v_im, v_im)
            combs_sum = torch.complex(v_re.div_(norm).sum(1), v_im.div_(norm).sum(1).neg_())
            wet += combs_sum.view(batch, n_bins) * allpass_chain[array]
        return (wet * (WET_GAIN / 2))[:, : n_fft // 2 + 1]

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        # the (8 combs x bins) terms of one filter array, the spectrum and the wet signal: about 21 reals
        # per FFT point measured (float32: 5.5 MB for a 59,049-sample crop), 24 stated
        return 2 * length * dtype.itemsize + 24 * fft_length(length) * real_size(dtype)

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        length = x.shape[1]
        n_fft = fft_length(length)
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        decay = torch.arange(length, device=x.device, dtype=real) * (math.log(_ALIAS) / n_fft)
        spectrum = torch.fft.rfft(x.to(real) * decay.exp(), n=n_fft)
        spectrum *= self.wet_response(params, n_fft, x.device, real)
        wet = torch.fft.irfft(spectrum, n=n_fft)[:, :length] * decay.neg().exp()
        return (x.to(real) + wet).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, room_size={self.room_size}, "
            f"reverberance={self.reverberance}, damping={self.damping}"
        )
