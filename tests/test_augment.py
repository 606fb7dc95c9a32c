"""Property tests of the augmentation steps and chain on signals generated here (CPU, small sizes)."""

from __future__ import annotations

import math

import pytest
import torch

from clmr.augment import (
    STEPS,
    AugmentError,
    Chain,
    Delay,
    Gain,
    HighLowPass,
    Noise,
    PitchShift,
    PolarityInversion,
    RandomCrop,
    Reverb,
)

SR = 22050


def tone(freq: float, seconds: float = 1.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t).float()[None]


def peak_hz(y: torch.Tensor, sr: int = SR) -> float:
    """Frequency of the spectral peak of the middle of y, with 8x zero padding and a Hann window."""
    mid = y[0, y.shape[1] // 8 : -y.shape[1] // 8].double()
    spec = torch.fft.rfft(mid * torch.hann_window(mid.numel(), dtype=torch.float64), n=8 * mid.numel()).abs()
    return float(spec.argmax()) * sr / (8 * mid.numel())


def rms_db(y: torch.Tensor) -> float:
    mid = y[0, y.shape[1] // 8 : -y.shape[1] // 8]
    return 20 * math.log10(float(mid.pow(2).mean().sqrt()))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- pitch shift


@pytest.mark.parametrize("cents", [300, -700, 700])
@pytest.mark.parametrize("freq", [100.0, 220.0, 300.0, 440.0, 660.0, 1500.0])
def test_pitch_shift_moves_a_tone_keeps_its_level_and_length(cents, freq):
    # 220, 300 and 660 Hz are where a two-head delay-line shifter cancels itself (heads in antiphase)
    x = tone(freq, 1.5)
    y = PitchShift(SR).apply(x, {"cents": torch.tensor([float(cents)])})
    assert y.shape == x.shape
    expected = freq * 2 ** (cents / 1200)
    assert abs(peak_hz(y) - expected) / expected < 0.01
    assert abs(rms_db(y) - rms_db(x)) < 1.0


@pytest.mark.parametrize("cents", [300, -700, 700])
def test_pitch_shift_keeps_click_onsets(cents):
    x = torch.zeros(1, 2 * SR)
    clicks = [int(s * SR) for s in (0.25, 0.6, 1.0, 1.4, 1.75)]
    x[0, clicks] = 1.0
    y = PitchShift(SR).apply(x, {"cents": torch.tensor([float(cents)])})[0]
    near = torch.zeros_like(y, dtype=torch.bool)
    tol = int(0.025 * SR)
    energy = y.pow(2)
    around = torch.arange(-tol, tol, dtype=torch.float32)
    for c in clicks:
        near[c - tol : c + tol] = True
        local = energy[c - tol : c + tol]
        assert local.sum() > 0.05, "a click vanished"  # the input click has energy 1
        assert abs(float((local * around).sum() / local.sum())) < 0.01 * SR, "a click moved"
    assert energy[~near].sum() < 0.01 * energy.sum(), "energy moved away from the onsets (tempo changed)"


def test_zero_pitch_shift_is_identity():
    x = torch.randn(2, 4000)
    y = PitchShift(SR).apply(x, {"cents": torch.zeros(2)})
    torch.testing.assert_close(y, x)


# ---------------------------------------------------------------- filters


def test_lowpass_and_highpass_responses():
    f = HighLowPass(SR)
    lp = {"highpass": torch.tensor([False]), "cutoff": torch.tensor([3000.0])}
    hp = {"highpass": torch.tensor([True]), "cutoff": torch.tensor([1000.0])}
    for params, stop, passed in ((lp, 6000.0, 500.0), (hp, 250.0, 4000.0)):
        assert rms_db(f.apply(tone(stop), params)) - rms_db(tone(stop)) <= -20.0
        assert abs(rms_db(f.apply(tone(passed), params)) - rms_db(tone(passed))) <= 1.0


def test_filter_draws_both_kinds_in_their_ranges():
    params = HighLowPass(SR).draw(2000, torch.device("cpu"), gen())
    hp, cut = params["highpass"], params["cutoff"]
    assert 0.45 < hp.float().mean() < 0.55
    assert cut[hp].min() >= 200 and cut[hp].max() <= 1200
    assert cut[~hp].min() >= 2200 and cut[~hp].max() <= 4000


def test_filter_ranges_relative_to_a_reference_rate_scale_with_the_rate():
    at_8k = Chain.from_config({"filter": {"reference_rate": 22050}}, sample_rate=8000).steps["filter"]
    scale = 8000 / 22050
    assert at_8k.lowpass_hz == pytest.approx((2200 * scale, 4000 * scale))
    assert at_8k.highpass_hz == pytest.approx((200 * scale, 1200 * scale))
    assert HighLowPass(22050, reference_rate=22050).lowpass_hz == HighLowPass(22050).lowpass_hz
    with pytest.raises(AugmentError, match="'filter': reference_rate must be > 0"):
        HighLowPass(8000, reference_rate=0)


# ---------------------------------------------------------------- delay, gain, noise, polarity


def test_delay_autocorrelation_peaks_at_the_drawn_lag():
    step = Delay(SR, p=1.0)
    params = step.draw(3, torch.device("cpu"), gen(3))
    x = torch.randn(3, SR)
    y = step.apply(x, params)
    spec = torch.fft.rfft(y, n=2 * SR)
    ac = torch.fft.irfft(spec.abs() ** 2, n=2 * SR)
    lo, hi = int(0.1 * SR), int(0.6 * SR)
    lags = ac[:, lo:hi].argmax(dim=1) + lo
    expected = torch.round(params["delay_ms"] * SR / 1000).long()
    assert torch.equal(lags, expected)
    assert set(Delay(SR).draw(500, torch.device("cpu"), gen())["delay_ms"].tolist()) == {
        200.0, 250.0, 300.0, 350.0, 400.0, 450.0
    }  # fmt: skip


def test_gain_changes_rms_by_the_drawn_db():
    step = Gain(p=1.0)
    x = torch.randn(8, 2000)
    y = step(x, gen(1))
    g = gen(1)
    torch.rand(8, generator=g)  # the coin flips
    drawn = step.draw(8, torch.device("cpu"), g)["gain_db"]
    change = 20 * torch.log10(y.pow(2).mean(1).sqrt() / x.pow(2).mean(1).sqrt())
    torch.testing.assert_close(change, drawn, atol=1e-3, rtol=0)
    assert drawn.min() >= -20 and drawn.max() <= -1 and drawn.std() > 1


def test_noise_has_the_drawn_snr():
    step = Noise(p=1.0)
    x = 0.3 * torch.randn(16, 20000)
    params = step.draw(16, torch.device("cpu"), gen(2))
    residual = step.apply(x, params, gen(5)) - x
    ratio = residual.std(dim=1) / x.std(dim=1)
    torch.testing.assert_close(ratio, params["snr"], rtol=0.05, atol=0)
    assert ratio.min() >= 1e-4 * 0.95 and ratio.max() <= 1e-2 * 1.05


def test_polarity_is_exact_negation():
    x = torch.randn(4, 100)
    assert torch.equal(PolarityInversion(p=1.0)(x, gen()), -x)
    assert torch.equal(PolarityInversion(p=0.0)(x, gen()), x)


# ---------------------------------------------------------------- reverb


def decay_time(y: torch.Tensor) -> float:
    """Seconds until the backward-integrated energy (Schroeder curve) of y falls by 20 dB."""
    edc = y.double().pow(2).flip(0).cumsum(0).flip(0)
    return float((edc > edc[0] * 0.01).sum()) / SR


def reverb_tail(room: float, reverberance: float, damping: float = 0.0) -> torch.Tensor:
    x = torch.zeros(1, 2 * SR)
    x[0, 100] = 1.0
    params = {
        k: torch.tensor([v])
        for k, v in zip(("room_size", "reverberance", "damping"), (room, reverberance, damping), strict=True)
    }
    y = Reverb(SR).apply(x, params, gen(4))
    return (y - x)[0, 100:]  # the wet part after the impulse


def test_reverb_decay_grows_with_reverberance_and_room_size():
    by_reverberance = [decay_time(reverb_tail(50, r)) for r in (0, 50, 100)]
    by_room = [decay_time(reverb_tail(s, 50)) for s in (0, 50, 100)]
    for times in (by_reverberance, by_room):
        assert times[0] < times[1] < times[2]
        assert times[2] > 2 * times[0]


def test_reverb_damping_shortens_high_frequencies():
    def late_high_share(damping: float) -> float:
        late = reverb_tail(100, 100, damping)[int(0.3 * SR) : int(0.8 * SR)]
        spec = torch.fft.rfft(late).abs() ** 2
        freqs = torch.fft.rfftfreq(late.numel(), 1 / SR)
        return float(spec[freqs > 4000].sum() / spec.sum())

    assert late_high_share(100) < 0.5 * late_high_share(0)


# ---------------------------------------------------------------- probabilities, seeds, chain


@pytest.mark.parametrize("name", list(STEPS))
def test_each_step_fires_at_its_probability(name):
    step = Chain(SR).steps[name]
    n = 3000
    # reverb leaves the first comb delay (56 to 810 samples at 22,050 Hz) dry, as sox does
    x = torch.randn(n, 1024 if name == "reverb" else 64) + 0.1
    changed = (step(x, gen(7)) != x).any(dim=1).float().mean().item()
    tolerance = 4 * math.sqrt(step.p * (1 - step.p) / n) + 1e-3
    assert abs(changed - step.p) <= tolerance


@pytest.mark.parametrize("name", ["polarity", "gain", "filter", "delay", "pitch", "reverb"])
def test_masking_on_accelerators_matches_the_cpu_subset(name, monkeypatch):
    step = Chain(SR, **{name: 0.5}).steps[name]
    x = torch.randn(6, 3000)
    subset = step(x, gen(9))
    monkeypatch.setattr(type(step), "compute_all", lambda self, x: True)
    torch.testing.assert_close(step(x, gen(9)), subset)


def test_same_seed_same_output_and_examples_differ():
    chain = Chain(SR, polarity=1.0, gain=1.0, filter=1.0, delay=1.0, pitch=1.0, reverb=1.0)
    x = torch.randn(1, SR).repeat(4, 1)
    original = x.clone()
    a, b, c = chain(x, gen(11)), chain(x, gen(11)), chain(x, gen(12))
    assert torch.equal(x, original), "the chain wrote into its input"
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    for i in range(1, 4):
        assert not torch.allclose(a[0], a[i])


def test_every_step_is_homogeneous_as_the_chain_scaling_assumes():
    """Chain runs each row scaled to a peak <= 1 and scales back, which is exact only if every step is
    homogeneous (f(c x) = c f(x)): a row 8x louder must give exactly 8x the output (no thresholds, no
    level-dependent parameters)."""
    x = 0.2 * torch.randn(6, SR, generator=gen(4))
    chain = Chain(SR, **{name: 1.0 for name in STEPS})
    assert torch.equal(chain(8 * x, gen(5)), 8 * chain(x, gen(5)))


@pytest.mark.parametrize("kind", ["silence", "clipped", "huge"])
def test_chain_output_is_finite(kind):
    x = {
        "silence": torch.zeros(4, SR),
        "clipped": torch.sign(torch.randn(4, SR)),
        "huge": 1e37 * torch.randn(4, SR),
    }[kind]
    for chain in (Chain(SR), Chain(SR, **{name: 1.0 for name in STEPS})):
        y = chain(x, gen(13))
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_chain_overrides_and_config():
    chain = Chain(SR, pitch=0.0, reverb={"damping": (0, 50)}, delay={"p": 0.1, "volume": 0.3})
    assert chain.probabilities() == {
        "polarity": 0.8, "noise": 0.01, "gain": 0.3, "filter": 0.8, "delay": 0.1, "pitch": 0.0, "reverb": 0.6
    }  # fmt: skip
    assert chain.steps["reverb"].damping == (0.0, 50.0) and chain.steps["delay"].volume == 0.3
    off = Chain.from_config({"enabled": False, "pitch": 0.6})
    assert set(off.probabilities().values()) == {0.0}
    assert Chain.from_config({"pitch": 0.2, "sample_rate": 16000}).steps["pitch"].sample_rate == 16000
    x = torch.randn(2, 500)
    assert torch.equal(Chain(SR, **{name: 0.0 for name in STEPS})(x), x)
    with pytest.raises(AugmentError, match="unknown augmentation step 'pitchshift'"):
        Chain(SR, pitchshift=0.5)
    with pytest.raises(AugmentError, match="'gain'.*not in"):
        Chain(SR, gain=1.5)
    with pytest.raises(AugmentError, match="'reverb'.*wetness"):
        Chain(SR, reverb={"wetness": 1})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pitch": {"min_semitones": 3, "max_semitones": -3}}, "'pitch'.*low <= high"),
        ({"reverb": {"room_size": (-5, 50)}}, "'reverb'.*room_size.*within \\[0.0, 100.0\\]"),
        ({"reverb": {"room_size": 200}}, "'reverb'.*room_size must be a \\(low, high\\) pair"),
        ({"delay": {"step_ms": 0}}, "'delay'.*step_ms must be > 0"),
        ({"gain": {"min_db": 0, "max_db": -6}}, "'gain'.*low <= high"),
        ({"noise": {"min_snr": -1}}, "'noise'.*within"),
        ({"filter": {"lowpass_hz": (2000, 20000)}}, "'filter'.*lowpass_hz.*11025"),
    ],
)
def test_bad_step_settings_fail_when_the_chain_is_built(override, message):
    with pytest.raises(AugmentError, match=message):
        Chain(SR, **override)


def test_bad_chain_sample_rate():
    with pytest.raises(AugmentError, match="sample_rate must be a positive whole number"):
        Chain(0)


def test_random_crop():
    x = torch.arange(5000, dtype=torch.float32)[None].repeat(64, 1)
    crop = RandomCrop(1000)
    y = crop(x, gen(14))
    assert y.shape == (64, 1000)
    starts = y[:, 0].long()
    assert torch.equal(y, starts[:, None].float() + torch.arange(1000))
    assert starts.min() >= 0 and starts.max() <= 4000 and starts.unique().numel() > 30
    assert torch.equal(RandomCrop(10)(torch.ones(2, 4), gen())[:, 4:], torch.zeros(2, 6))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_chain_keeps_the_dtype(dtype):
    y = Chain(SR, **{name: 1.0 for name in STEPS})(torch.randn(2, 4000, dtype=dtype), gen(15))
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("name", "length"), [("pitch", 3000), ("delay", 3000), ("filter", 20000), ("reverb", 4000)]
)
def test_cpu_row_blocks_match_one_masked_batch(name, length, monkeypatch):
    """On CPU the firing rows go through in blocks that reuse scratch buffers (a smaller last block
    included); the result must equal computing every row at once and masking, as accelerators do."""
    step = Chain(SR, **{name: 0.7}).steps[name]
    x = torch.randn(130, length, generator=gen(1))
    assert 130 * 0.7 > step.cpu_block_samples // length  # at least two blocks
    blocked = step(x, gen(3))
    monkeypatch.setattr(type(step), "compute_all", lambda self, x: True)
    # the phase vocoder's peak picking can flip on a last-bit difference of SIMD vs scalar code (a row's
    # offset in the batch): near-tied bins then lock to another peak, a change far below the signal
    tolerance = {"atol": 5e-3, "rtol": 0.0} if name == "pitch" else {}
    torch.testing.assert_close(blocked, step(x, gen(3)), **tolerance)
