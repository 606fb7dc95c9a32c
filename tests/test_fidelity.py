"""clmr's reverb, pitch shift and filter against the reference's own DSP: the `sox` command line (skipped
when it is not installed) and julius, on impulses, noise, a chord and generated music."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clmr.augment import HighLowPass, PitchShift, Reverb
from clmr.augment.measure import drr_db, level_db, onset_ms, t60_s
from clmr.augment.reference import have_sox, sox
from clmr.data.synthetic import draw_piece, render

SR = 22050
needs_sox = pytest.mark.skipif(not have_sox(), reason="the sox command line is not installed")


def music(seed: int, seconds: float = 2.0) -> torch.Tensor:
    """A generated piece (clmr.data.synthetic)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(render(draw_piece(rng), seconds, SR, rng))


def chord(seconds: float = 2.0) -> torch.Tensor:
    """C major with the octave (four partials 60-130 Hz apart: they share a phase-vocoder window)."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return sum(0.1 * torch.sin(2 * math.pi * f * t) for f in (261.63, 329.63, 392.0, 523.25)).float()


def reverb(x: torch.Tensor, reverberance: float, damping: float, room: float, sr: int = SR) -> torch.Tensor:
    params = {"room_size": [room], "reverberance": [reverberance], "damping": [damping]}
    return Reverb(sr).apply(x[None], {k: torch.tensor(v) for k, v in params.items()})[0]


# ---------------------------------------------------------------- reverb: sox `reverb r d s` + `channels 1`

GRID = [(50, 50, 100), (20, 50, 20), (80, 80, 50), (50, 50, 0), (0, 100, 70), (100, 0, 100), (65, 30, 85)]


@needs_sox
@pytest.mark.parametrize(("reverberance", "damping", "room"), GRID)
def test_reverb_impulse_response_matches_sox(reverberance, damping, room):
    seconds = 6.0 if reverberance == 100 else 2.0  # the -25 dB point of a 9 s T60 is at 3.8 s
    x = torch.zeros(int(seconds * SR))
    x[0] = 0.5
    ref = sox(x, SR, ["reverb", str(reverberance), str(damping), str(room), "channels", "1"])
    y = reverb(x, reverberance, damping, room).double()
    assert abs(drr_db(y, 0, SR) - drr_db(ref, 0, SR)) <= 1.5
    assert abs(t60_s(y, 0, SR) / t60_s(ref, 0, SR) - 1) <= 0.15
    assert abs(onset_ms(y, 0, SR) - onset_ms(ref, 0, SR)) <= 2.0
    # stronger than the tolerances: the same network, so the same samples (sox computes in float32)
    assert float((y - ref).abs().max()) <= 1e-3 * float(ref[1:].abs().max())


@needs_sox
@pytest.mark.parametrize("sr", [16000, 44100])
def test_reverb_delay_lines_scale_with_the_sample_rate_as_sox(sr):
    x = torch.zeros(sr)
    x[0] = 0.5
    for reverberance, damping, room in ((50, 50, 100), (30, 70, 10)):
        ref = sox(x, sr, ["reverb", str(reverberance), str(damping), str(room), "channels", "1"])
        y = reverb(x, reverberance, damping, room, sr).double()
        assert onset_ms(y, 0, sr) == pytest.approx(onset_ms(ref, 0, sr), abs=0.1)
        assert float((y - ref).abs().max()) <= 1e-3 * float(ref[1:].abs().max())


@needs_sox
@pytest.mark.parametrize("seed", [0, 1])
def test_reverb_level_on_music_matches_sox(seed):
    x = music(seed)
    x = x * (0.25 / float(x.abs().max()))  # sox clips its output at full scale, clmr does not
    for reverberance, damping, room in ((50, 50, 100), (100, 0, 100), (20, 80, 10)):
        ref = sox(x, SR, ["reverb", str(reverberance), str(damping), str(room), "channels", "1"])
        y = reverb(x, reverberance, damping, room)
        assert abs(level_db(y, x) - level_db(ref, x)) <= 1.0


def test_reverb_is_dry_until_the_first_comb_and_keeps_the_dry_path_at_unity():
    x = torch.zeros(4000)
    x[0] = 1.0
    y = reverb(x, 50, 50, 100)  # first comb: round(1116 * 22050 / 44100) = 558 samples
    assert float(y[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(y[1:558].abs().max()) < 1e-6 < float(y[558].abs())


# ---------------------------------------------------------------- pitch: sox `pitch c` + `rate`


@needs_sox
@pytest.mark.parametrize("cents", [-700, -300, 300, 700])
def test_pitch_shift_level_matches_sox(cents):
    noise = 0.1 * torch.randn(int(1.5 * SR), generator=torch.Generator().manual_seed(0))
    step = PitchShift(SR)
    for x in (noise, chord(1.5), music(2, 1.5)):
        ref = sox(x, SR, ["pitch", str(cents), "rate", str(SR)])[: x.numel()]
        y = step.apply(x[None], {"cents": torch.tensor([float(cents)])})[0]
        middle = slice(x.numel() // 8, -x.numel() // 8)  # both smear the crop's edges
        assert abs(level_db(y[middle], x[middle]) - level_db(ref[middle], x[middle])) <= 1.0


# ---------------------------------------------------------------- filter: julius


@pytest.mark.parametrize("kind", ["noise", "music"])
def test_filter_equals_julius(kind):
    julius = pytest.importorskip("julius")
    cutoffs = [200.0, 450.5, 1200.0, 2200.0, 3333.3, 4000.0]
    highpass = [True, True, True, False, False, False]
    if kind == "noise":
        x = torch.randn(len(cutoffs), 20000, generator=torch.Generator().manual_seed(1))
        x[:, :500] += 2.0  # an offset at the crop's start: replicate padding, not zeros
    else:
        x = torch.stack([music(seed, 1.0) for seed in range(len(cutoffs))])
    y = HighLowPass(SR).apply(x, {"cutoff": torch.tensor(cutoffs), "highpass": torch.tensor(highpass)})
    for row, (cutoff, high) in enumerate(zip(cutoffs, highpass, strict=True)):
        ref = (julius.highpass_filter if high else julius.lowpass_filter)(x[row], cutoff / SR)
        assert float((y[row] - ref).norm() / ref.norm()) <= 1e-3


# ---------------------------------------------------------------- the measures and the sox runner


def test_measures_on_a_response_with_known_values():
    sr = 10000
    y = torch.zeros(3 * sr, dtype=torch.float64)
    y[100] = 1.0
    onset = 100 + 50  # 5 ms after the impulse
    n = torch.arange(y.numel() - onset, dtype=torch.float64)
    y[onset:] = 0.1 * 10 ** (-3 * n / (0.5 * sr)) * torch.cos(0.3 * n)  # 60 dB per 0.5 s
    assert t60_s(y, 100, sr) == pytest.approx(0.5, rel=0.02)
    assert onset_ms(y, 100, sr) == pytest.approx(5.0)
    rest = float(y[onset:].square().sum())
    assert drr_db(y, 100, sr) == pytest.approx(10 * math.log10(1.0 / rest), abs=1e-9)
    assert level_db(0.5 * y, y) == pytest.approx(-6.0206, abs=1e-4)
    assert math.isnan(t60_s(y[:102], 100, sr))  # no tail


@needs_sox
def test_sox_runner_reports_a_bad_effect():
    from clmr.augment.reference import SoxError

    with pytest.raises(SoxError, match="sox reverb 500"):
        sox(torch.zeros(100), SR, ["reverb", "500"])
